"""Transfer learning: the NGD surrogate, the entropy loss, one step per mode, resume and determinism."""

import pytest
import torch
from PIL import Image

from ddcs_core.attacks.augment import AugmentConfig
from ddcs_core.attacks.losses import entropy_loss
from ddcs_core.control import Cancelled
from ddcs_core.errors import DDCSInputError
from ddcs_core.geometry.ngd import NGDBasis, project_damped, project_reference
from ddcs_core.models.checkpoints import load_model
from ddcs_core.transfer import AdversarialTerm, TransferConfig, image_gradient, rescale_to_gradient, transfer
from tests.tiny_world import RES, public_images, tiny_classifier, tiny_embed, tiny_gan


pytestmark = pytest.mark.usefixtures("deterministic_cpu")


def fake_images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed)) * 2 - 1).requires_grad_(True)


@pytest.mark.parametrize("projection,scale", [("reference", "spectral"), ("reference", "grad-norm"), ("reference", "none"),
                                              ("damped", "spectral"), ("damped", "grad-norm")])
def test_surrogate_gradient_is_the_projected_gradient(projection, scale):
    victim, embed = tiny_classifier(), tiny_embed()
    c = TransferConfig(mode="ngd", projection=projection, ngd_scale=scale, k=3, lam=0.7, reference_latents=2)
    term = AdversarialTerm(c, victim.requires_grad_(False), embed, torch.Generator().manual_seed(5))
    if projection == "reference":
        G, _ = tiny_gan()
        term.prepare_reference(G)
    x = fake_images()
    surrogate = term(x)
    surrogate.backward()
    # the same gradient and projection, computed independently
    g, _ = image_gradient(victim, x, c.augment, torch.Generator().manual_seed(5))
    pg = project_reference(g, term.projector.basis) if projection == "reference" \
        else project_damped(g, NGDBasis.from_images(embed, x.detach(), 3, tol=c.lanczos_tol), c.mu)
    if scale == "grad-norm":
        pg = rescale_to_gradient(pg, g)
    elif scale == "spectral":  # P / ||P||_2: a contraction, so never longer than the plain gradient
        basis = term.projector.basis
        lam_min = basis.eigvals.amin(-1)[torch.arange(3) % basis.eigvals.shape[0]] if projection == "reference" \
            else torch.full((3,), c.mu)
        pg = pg * lam_min.view(-1, 1, 1, 1)
        assert (pg.flatten(1).norm(dim=1) <= g.flatten(1).norm(dim=1) * (1 + 1e-5)).all()
    assert torch.allclose(x.grad, c.lam * pg, rtol=1e-4, atol=1e-9)
    assert x.grad.abs().sum() > 0


def test_rescale_matches_norms_and_keeps_direction():
    g = torch.randn(3, 3, 4, 4)
    pg = torch.randn(3, 3, 4, 4) * torch.tensor([1e4, 1e-4, 0.0]).view(3, 1, 1, 1)
    out = rescale_to_gradient(pg, g)
    assert torch.allclose(out[:2].flatten(1).norm(dim=1), g[:2].flatten(1).norm(dim=1))
    assert torch.allclose(torch.nn.functional.cosine_similarity(out[:2].flatten(1), pg[:2].flatten(1)), torch.ones(2))
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def test_entropy_loss_gradient_matches_formula_and_finite_differences():
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = entropy_loss(z)
    (grad,) = torch.autograd.grad(loss, z)
    p = z.detach().softmax(1)
    h = -(p * p.log()).sum(1, keepdim=True)
    assert torch.allclose(grad, -p * (p.log() + h))  # ∂H/∂z_c = −p_c (log p_c + H)
    assert torch.autograd.gradcheck(entropy_loss, (z,))
    eps, i, j = 1e-6, 2, 3
    zp, zm = z.detach().clone(), z.detach().clone()
    zp[i, j] += eps
    zm[i, j] -= eps
    assert abs((entropy_loss(zp) - entropy_loss(zm)).item() / (2 * eps) - grad[i, j].item()) < 1e-7


def run_transfer(tmp_path, mode, steps=1, victim="tiny", **kw):
    G, D = tiny_gan()
    v = tiny_classifier() if victim == "tiny" else victim
    cfg = TransferConfig(mode=mode, steps=steps, batch_size=4, k=3, reference_latents=2, ckpt_every=2, grid=2, **kw)
    return transfer(G, D, v, public_images(), cfg, tmp_path, embed_fn=tiny_embed(), progress=False), G


class Exploding(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("vanilla mode must not call the victim")


def test_one_step_per_mode_changes_the_generator_and_vanilla_ignores_the_victim(tmp_path):
    weights = {}
    for mode in ("vanilla", "entropy", "ngd"):
        summary, G0 = run_transfer(tmp_path, mode, victim=Exploding() if mode == "vanilla" else "tiny")
        G1, _ = load_model(summary["generator"])
        changed = [k for k, v in G0.state_dict().items() if not torch.equal(v, G1.state_dict()[k])]
        assert changed, mode
        weights[mode] = G1.state_dict()
        assert (tmp_path / "grids" / mode / "step-0000.png").is_file() and (tmp_path / "grids" / f"{mode}.png").is_file()
    first = "mapping_net.layers.0.weight"
    assert not torch.equal(weights["vanilla"][first], weights["entropy"][first])
    assert not torch.equal(weights["entropy"][first], weights["ngd"][first])
    # the same fixed latents for every mode: step 0 is the pre-trained G in each
    grids = [Image.open(tmp_path / "grids" / m / "step-0000.png").tobytes() for m in ("vanilla", "entropy", "ngd")]
    assert grids[0] == grids[1] == grids[2]


def test_resume_equals_uninterrupted_and_is_deterministic(tmp_path):
    full, _ = run_transfer(tmp_path / "full", "ngd", steps=4)
    again, _ = run_transfer(tmp_path / "again", "ngd", steps=4)
    calls = {"n": 0}

    def stop_at_3():
        calls["n"] += 1
        return calls["n"] == 4  # checked before step index 3, after the checkpoint at step 2

    G, D = tiny_gan()
    cfg = TransferConfig(mode="ngd", steps=4, batch_size=4, k=3, reference_latents=2, ckpt_every=2, grid=2)
    with pytest.raises(Cancelled):
        transfer(G, D, tiny_classifier(), public_images(), cfg, tmp_path / "split", embed_fn=tiny_embed(),
                 progress=False, should_stop=stop_at_3)
    split = transfer(G, D, tiny_classifier(), public_images(), cfg, tmp_path / "split", embed_fn=tiny_embed(), progress=False)
    a, b, c = (load_model(s["generator"])[0].state_dict() for s in (full, again, split))
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "split" / "grids" / "ngd").iterdir()) == \
        ["step-0000.png", "step-0002.png", "step-0004.png"]


def test_bad_config_and_inputs(tmp_path):
    with pytest.raises(DDCSInputError, match="transfer.mode"):
        TransferConfig(mode="adversarial")
    with pytest.raises(DDCSInputError, match="transfer.gan"):
        TransferConfig(gan={"lr": 1})
    with pytest.raises(DDCSInputError, match="augment scale"):
        TransferConfig.from_dict({"augment": {"scale": [0.5, 1.5]}})
    G, D = tiny_gan()
    with pytest.raises(DDCSInputError, match="public_images"):
        transfer(G, D, tiny_classifier(), public_images()[:, :16, :16], TransferConfig(steps=1), tmp_path, progress=False)
    with pytest.raises(DDCSInputError, match="needs a victim"):
        transfer(G, D, None, public_images(), TransferConfig(mode="entropy", steps=1), tmp_path, progress=False)
    assert isinstance(AugmentConfig.from_dict({"flip": False}), AugmentConfig)
