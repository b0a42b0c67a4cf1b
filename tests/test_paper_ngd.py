"""The paper preset (each of the official code's NGD choices as a field) and the projection diagnostics."""

import pytest
import torch
import yaml
from torch import nn

from ddcs_core.config import load_config
from ddcs_core.errors import DDCSInputError
from ddcs_core.geometry.hvp import hvp_double_backprop, hvp_jvp_vjp
from ddcs_core.geometry.lanczos import top_eigenpairs_batch
from ddcs_core.geometry.ngd import NGDBasis, project_reference, projection_diagnostics, subspace_fraction
from ddcs_core.transfer import (PAPER_PRESET, AdversarialTerm, TransferConfig, image_gradient, paper_preset_table,
                                preset_values)
from tests.tiny_world import RES, tiny_classifier, tiny_embed

DT = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RecordingG(nn.Module):
    """A generator stand-in that records the latents it is called with (same interface as ours)."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.const = nn.Parameter(torch.zeros(1))
        self.lin = nn.Linear(self.z_dim, 3 * RES * RES)
        self.calls: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        self.calls.append(z.clone())
        return torch.tanh(self.lin(z)).view(-1, 3, RES, RES)


def small_embed(seed: int = 0) -> nn.Module:
    """A float64 LPIPS-shaped embedding for tiny images (unit-normalised channels, so it has curvature)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 5, 3, padding=1).double()

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.conv(x))
            return (h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)).flatten(1)

    return Embed().requires_grad_(False)


def dense(op, x: torch.Tensor) -> torch.Tensor:
    """The (P, P) matrix of a per-image HVP `op(v)` at one image x (1, C, H, W)."""
    p = x[0].numel()
    eye = torch.eye(p, dtype=x.dtype)
    return torch.stack([op(eye[i].view_as(x)).flatten() for i in range(p)], 1)


# --- the preset -----------------------------------------------------------------------------------

def test_preset_sets_every_field_and_explicit_keys_win():
    c = TransferConfig.from_dict({"mode": "ngd", "ngd_preset": "paper"})
    want = {"lam": 1.0, "projection": "reference", "k": 20, "ngd_scale": "none", "basis_per_slot": True,
            "basis_latents": "uniform", "hessian_offset": 1e-4, "lpips_net": "vgg", "eigensolver": "arpack"}
    assert preset_values("paper") == want and set(PAPER_PRESET) == set(want)
    assert {k: getattr(c, k) for k in want} == want
    assert c.ngd().method == "scipy" and c.preset_deviations() == {} and c.method_label() == "ngd (paper)"
    ablated = TransferConfig.from_dict({"mode": "ngd", "ngd_preset": "paper", "lam": 0.03, "ngd_scale": "spectral"})
    assert (ablated.lam, ablated.ngd_scale, ablated.lpips_net) == (0.03, "spectral", "vgg")
    assert ablated.preset_deviations() == {"lam": 0.03, "ngd_scale": "spectral"}
    assert TransferConfig.from_dict(ablated.to_dict()) == ablated  # the stored config re-parses to itself
    table = paper_preset_table(ablated)
    assert all(f"`{k}`" in table for k in want) and "| yes |" in table
    # defaults are ours, and the preset's reference-only fields refuse the damped projection
    assert TransferConfig().signature_dict() == {k: v for k, v in TransferConfig().to_dict().items()
                                                 if k not in ("ngd_preset", "lpips_net", "eigensolver", "basis_latents",
                                                              "hessian_offset", "basis_per_slot")}
    with pytest.raises(DDCSInputError, match="basis_latents"):
        TransferConfig(mode="ngd", projection="damped", basis_latents="uniform")
    for bad in ({"ngd_preset": "nope"}, {"lpips_net": "squeeze"}, {"eigensolver": "power"}, {"hessian_offset": -1},
                {"basis_per_slot": "yes"}, {"basis_latents": "gauss"}):
        with pytest.raises(DDCSInputError):
            TransferConfig.from_dict({"mode": "ngd", **bad})


def test_set_overrides_reach_every_new_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"transfer": {"modes": ["ngd"], "lam": 0.03, "ngd_scale": "spectral"}}))
    sets = ["transfer.lpips_net=vgg", "transfer.eigensolver=arpack", "transfer.basis_latents=uniform",
            "transfer.hessian_offset=1e-4", "transfer.basis_per_slot=true"]
    c = load_config(path, sets).transfer.for_mode("ngd")
    assert (c.lpips_net, c.eigensolver, c.basis_latents, c.hessian_offset, c.basis_per_slot) == \
        ("vgg", "arpack", "uniform", 1e-4, True)
    assert c.ngd_preset is None and c.lam == 0.03
    # the preset on the command line replaces the file's values of its fields; later --sets still win
    c = load_config(path, ["transfer.ngd_preset=paper"]).transfer.for_mode("ngd")
    assert (c.lam, c.ngd_scale, c.lpips_net) == (1.0, "none", "vgg")
    c = load_config(path, ["transfer.ngd_preset=paper", "transfer.lam=0.1"]).transfer.for_mode("ngd")
    assert (c.lam, c.ngd_scale) == (0.1, "none") and c.method_label() == "ngd (paper; lam=0.1)"


# --- where the bases come from ------------------------------------------------------------------

def test_uniform_latents_offset_and_one_basis_per_slot():
    G = RecordingG()
    c = TransferConfig(mode="ngd", k=2, batch_size=3, reference_latents=5, basis_latents="uniform",
                       hessian_offset=1e-4, basis_per_slot=True, lanczos_tol=1e-2)
    term = AdversarialTerm(c, tiny_classifier().requires_grad_(False), tiny_embed(), torch.Generator().manual_seed(0))
    x, at = term.reference_points(G)
    z, z_off = G.calls
    assert z.shape == (3, G.z_dim) and bool(((z >= 0) & (z < 1)).all()) and z.mean() > 0.3
    step = (z_off - z).abs()
    assert 0 < step.max() < 1e-3 and at.shape == x.shape and 0 < (at - x).abs().max() < 1e-2
    G.calls.clear()
    normal = AdversarialTerm(TransferConfig(mode="ngd", reference_latents=5), term.victim, term.embed_fn, term.gen)
    x5, at5 = normal.reference_points(G)
    assert x5.shape[0] == 5 and at5 is None and (G.calls[0] < 0).any()


def test_basis_per_slot_is_used_by_slot_index():
    c = TransferConfig(mode="ngd", k=2, batch_size=3, basis_per_slot=True, ngd_scale="none", lam=1.0, lanczos_tol=1e-2)
    victim = tiny_classifier().requires_grad_(False)
    term = AdversarialTerm(c, victim, tiny_embed(), torch.Generator().manual_seed(5))
    G = RecordingG()
    term.prepare_reference(G)
    basis = term.projector.basis
    assert basis.eigvals.shape[0] == 3
    x = (torch.rand(6, 3, RES, RES, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_(True)
    term(x).backward()
    g, _ = image_gradient(victim, x, c.augment, torch.Generator().manual_seed(5))
    for i in range(6):
        slot = NGDBasis(basis.eigvals[i % 3: i % 3 + 1], basis.eigvecs[i % 3: i % 3 + 1], basis.image_shape)
        assert torch.allclose(x.grad[i: i + 1], project_reference(g[i: i + 1], slot), rtol=1e-4, atol=1e-9)
    assert set(term.diagnostics) == {"kept", "cos", "gain", "step_ratio"} and 0 < term.diagnostics["kept"] <= 1


# --- the eigensolvers and the off-point Hessian ----------------------------------------------------

def test_arpack_and_lanczos_agree_on_the_top_eigenvalues():
    embed = small_embed()
    x = torch.rand(2, 3, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(2)) * 2 - 1
    at = x + 1e-3 * torch.randn(x.shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    for where in (None, at):
        arpack, va = top_eigenpairs_batch(embed, x, 5, tol=1e-10, method="scipy", at=where)
        lanczos, vl = top_eigenpairs_batch(embed, x, 5, tol=1e-10, method="torch", at=where)
        assert torch.allclose(arpack, lanczos, rtol=1e-6)
        overlap = torch.einsum("npk,npk->nk", va, vl).abs()  # same vectors up to sign
        assert bool((overlap > 1 - 1e-5).all())


def test_offset_hessian_differs_and_is_symmetric_nearly_psd():
    embed = small_embed()
    x = torch.rand(1, 3, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(4)) * 2 - 1
    at = x + 1e-2 * torch.randn(x.shape, dtype=DT, generator=torch.Generator().manual_seed(5))
    on = dense(lambda v: hvp_jvp_vjp(embed, x, v), x)
    off = dense(lambda v: hvp_double_backprop(embed, x, v, at=at), x)
    assert torch.allclose(dense(lambda v: hvp_double_backprop(embed, x, v), x), on, rtol=1e-8, atol=1e-10)
    assert (off - on).norm() > 1e-6 * on.norm()  # the residual term is there
    assert (off - on).norm() < 0.2 * on.norm()  # and small that close to x
    assert torch.allclose(off, off.T, rtol=1e-8, atol=1e-10)
    vals = torch.linalg.eigvalsh(off)
    assert vals.min() > -0.05 * vals.max()


# --- the diagnostic ---------------------------------------------------------------------------------

def test_kept_fraction_and_gain_match_a_hand_computation():
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=DT, generator=torch.Generator().manual_seed(0)))
    vecs = torch.stack([q[:, :2], q[:, 2:4]])  # two slots, k = 2, orthonormal columns
    basis = NGDBasis(torch.tensor([[4.0, 2.0], [3.0, 1.0]], dtype=DT), vecs, (3, 2, 2))
    # image 0: half its norm² in slot 0's span; image 1 lies in slot 1's span; image 2 uses slot 0 again
    g = torch.stack([q[:, 0] + q[:, 5], 3 * q[:, 3], q[:, 7]]).view(3, 3, 2, 2)
    assert torch.allclose(subspace_fraction(g, basis), torch.tensor([2 ** -0.5, 1.0, 0.0], dtype=DT))
    pg = project_reference(g, basis)
    # P g_0 = q0/4, P g_1 = 3 q3/1, P g_2 = 0: gain = <g, Pg>/|g|² = (1/4)/2, 9/9, 0
    d = projection_diagnostics(g, pg, basis)
    assert d["kept"] == pytest.approx((2 ** -0.5 + 1) / 3)
    assert d["gain"] == pytest.approx((1 / 8 + 1 + 0) / 3)
    assert d["step_ratio"] == pytest.approx(((1 / 4) / 2 ** 0.5 + 1 + 0) / 3)
    assert d["cos"] == pytest.approx((2 ** -0.5 + 1 + 0) / 3)
