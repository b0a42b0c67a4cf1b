"""Geometry: LPIPS-Hessian HVPs, Lanczos and the NGD projections, on tiny float64 stand-in embeddings."""

import pytest
import torch
from torch import nn

from ddcs_core.errors import DDCSInputError
from ddcs_core.geometry import lanczos
from ddcs_core.geometry.hvp import dense_hessian, hvp_double_backprop, hvp_jvp_vjp
from ddcs_core.geometry.lanczos import LanczosNotConverged, top_eigenpairs, top_eigenpairs_batch
from ddcs_core.geometry.ngd import NGDBasis, NGDConfig, NGDProjector, project_damped, project_reference

DT = torch.float64


class TinyEmbed(nn.Module):
    """LPIPS-shaped stand-in: two conv taps (ReLU, max-pool), unit-normalised over channels, flattened."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.double()

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        return (f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = torch.relu(self.conv1(x))
        h2 = torch.relu(self.conv2(nn.functional.max_pool2d(h1, 2)))
        return torch.cat([self._unit(h1), self._unit(h2)], 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These problems are tiny: a second intra-op thread only adds sync overhead (10-100x on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def embed() -> TinyEmbed:
    return TinyEmbed()


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, dtype=DT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grad_distance(embed: nn.Module, x: torch.Tensor, xp: torch.Tensor) -> torch.Tensor:
    """∇_{x'} d(x, x') for one image (C, H, W)."""
    xp = xp.clone().requires_grad_(True)
    d = (embed(xp[None]) - embed(x[None]).detach()).pow(2).sum()
    return torch.autograd.grad(d, xp)[0]


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return bool((a - b).norm() <= rtol * b.norm())


# --- HVP ---------------------------------------------------------------------------------------


def test_dense_hessian_matches_finite_differences(embed):
    x = images(2, 4)
    hess = dense_hessian(embed, x)
    assert hess.shape == (2, 48, 48)
    h = 1e-5
    for i in range(2):
        cols = []
        for j in range(48):
            e = torch.zeros(48, dtype=DT)
            e[j] = h
            e = e.reshape(3, 4, 4)
            diff = grad_distance(embed, x[i], x[i] + e) - grad_distance(embed, x[i], x[i] - e)
            cols.append(diff.flatten() / (2 * h))
        assert close(torch.stack(cols, 1), hess[i], 1e-7)


def test_hessian_is_symmetric_psd_gauss_newton(embed):
    x = images(2, 4)
    hess = dense_hessian(embed, x)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda z: embed(z[None])[0], x[i]).reshape(-1, 48)
        assert close(hess[i], 2 * jac.T @ jac, 1e-12)
        assert torch.allclose(hess[i], hess[i].T, atol=1e-12)
        lam = torch.linalg.eigvalsh(hess[i])
        assert lam.min() >= -1e-12 * lam.max()


@pytest.mark.parametrize("size", [4, 8])
def test_hvps_agree_with_each_other_and_dense(embed, size):
    x, v = images(3, size), images(3, size, seed=2)
    dense = torch.einsum("npq,nq->np", dense_hessian(embed, x), v.flatten(1)).reshape(x.shape)
    fwd = hvp_jvp_vjp(embed, x, v, mode="forward")
    assert close(fwd, dense, 1e-12)
    assert close(hvp_jvp_vjp(embed, x, v, mode="double_vjp"), dense, 1e-12)
    assert close(hvp_double_backprop(embed, x, v), dense, 1e-12)
    assert not fwd.requires_grad and all(p.grad is None for p in embed.parameters())


def test_batch_independence(embed):
    x, v = images(3, 8), images(3, 8, seed=2)
    x2, v2 = x.clone(), v.clone()
    x2[1:], v2[1:] = images(2, 8, seed=3), images(2, 8, seed=4)
    for hvp in (hvp_jvp_vjp, hvp_double_backprop):
        alone = hvp(embed, x[:1], v[:1])[0]
        assert torch.allclose(hvp(embed, x, v)[0], alone, rtol=1e-12, atol=1e-14)
        assert torch.allclose(hvp(embed, x2, v2)[0], alone, rtol=1e-12, atol=1e-14)


class _TanhNoForwardAD(torch.autograd.Function):
    """tanh without a forward-AD rule (and without functorch support), to force the fallback."""

    @staticmethod
    def forward(ctx, z):
        y = torch.tanh(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


def test_auto_mode_falls_back_without_forward_ad(embed):
    def embed_fn(z):
        return _TanhNoForwardAD.apply(embed(z))

    x, v = images(2, 4), images(2, 4, seed=2)
    with pytest.raises(RuntimeError):
        hvp_jvp_vjp(embed_fn, x, v, mode="forward")
    assert close(hvp_jvp_vjp(embed_fn, x, v), hvp_double_backprop(embed_fn, x, v), 1e-12)


def test_hvp_bad_inputs(embed):
    x = images(2, 4)
    with pytest.raises(DDCSInputError, match="x must"):
        hvp_jvp_vjp(embed, x[0], x[0])
    with pytest.raises(DDCSInputError, match="v must"):
        hvp_double_backprop(embed, x, x[:1])
    with pytest.raises(DDCSInputError, match="mode"):
        hvp_jvp_vjp(embed, x, x, mode="reverse")
    with pytest.raises(DDCSInputError, match="embed_fn"):
        hvp_jvp_vjp(lambda z: embed(z).reshape(-1), x, x)


# --- Lanczos -----------------------------------------------------------------------------------


def _check_pairs(vals, vecs, hess, k):
    lam, u = torch.linalg.eigh(hess)
    lam, u = lam.flip(0)[:k], u.flip(1)[:, :k]
    assert torch.allclose(vals, lam, rtol=1e-9, atol=1e-12)
    assert (vecs.T @ u).diagonal().abs().min() > 1 - 1e-8
    assert torch.allclose(vecs.T @ vecs, torch.eye(k, dtype=DT), atol=1e-10)


@pytest.mark.parametrize("method", ["scipy", "torch"])
def test_lanczos_matches_dense_eigh(embed, method):
    x = images(2, 8)
    hess = dense_hessian(embed, x)
    k = 6
    vals, vecs = top_eigenpairs(
        lambda t: hvp_jvp_vjp(embed, x[:1], t.reshape(1, 3, 8, 8)).flatten(), 192, k, tol=1e-12, method=method
    )
    _check_pairs(vals, vecs, hess[0], k)
    vals, vecs = top_eigenpairs_batch(embed, x, k, tol=1e-12, method=method)
    assert vals.shape == (2, k) and vecs.shape == (2, 192, k)
    for i in range(2):
        _check_pairs(vals[i], vecs[i], hess[i], k)


def _rotated(diag: list[float], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(diag), len(diag), dtype=DT, generator=gen))
    return q @ torch.diag(torch.tensor(diag, dtype=DT)) @ q.T


@pytest.mark.parametrize(
    "diag, k",
    [
        ([5.0, 5.0, 5.0] + [1.0] * 27, 4),  # repeated eigenvalues: Krylov breaks down every 2 steps
        ([3.0, 2.0, 1.0] + [0.0] * 27, 5),  # rank 3 < k: null directions come back with λ = 0
        ([float(i + 1) for i in range(12)], 12),  # k == dim: the whole spectrum
    ],
)
@pytest.mark.parametrize("method", ["scipy", "torch"])
def test_lanczos_degenerate_spectra(diag, k, method):
    a = _rotated(diag)
    vals, vecs = top_eigenpairs(lambda t: a @ t, len(diag), k, tol=1e-10, method=method)
    assert torch.allclose(vals, torch.tensor(sorted(diag, reverse=True)[:k], dtype=DT), atol=1e-9)
    assert torch.allclose(vecs.T @ vecs, torch.eye(k, dtype=DT), atol=1e-10)
    assert torch.allclose(a @ vecs, vecs * vals, atol=1e-8)


def test_lanczos_reports_non_convergence():
    a = _rotated([1.0 + 0.01 * i for i in range(60)])
    with pytest.raises(LanczosNotConverged) as err:
        top_eigenpairs(lambda t: a @ t, 60, 5, tol=1e-12, maxiter=6, method="torch")
    assert err.value.eigvals.shape == (1, 5)


def test_lanczos_bad_inputs(embed):
    with pytest.raises(DDCSInputError, match="k must"):
        top_eigenpairs(lambda t: t, 5, 6)
    with pytest.raises(DDCSInputError, match="method"):
        top_eigenpairs(lambda t: t, 5, 2, method="arpack")
    with pytest.raises(DDCSInputError, match="hvp must"):
        top_eigenpairs(lambda t: t[:3], 5, 2, method="torch")
    with pytest.raises(DDCSInputError, match="x must"):
        top_eigenpairs_batch(embed, images(1, 4)[0], 2)


# --- projections -------------------------------------------------------------------------------


def random_basis(b: int, k: int, seed: int = 0) -> NGDBasis:
    gen = torch.Generator().manual_seed(seed)
    vecs = torch.linalg.qr(torch.randn(b, 48, k, dtype=DT, generator=gen)).Q
    vals = torch.rand(b, k, dtype=DT, generator=gen) + 0.1
    return NGDBasis(vals, vecs, (3, 4, 4))


@pytest.mark.parametrize("b, n", [(2, 5), (3, 3), (1, 4)])
def test_reference_projection_formula(b, n):
    basis = random_basis(b, 5)
    g = images(n, 4, seed=3)
    out = project_reference(g, basis)
    for i in range(n):
        v, lam = basis.eigvecs[i % b], basis.eigvals[i % b]
        assert torch.allclose(out[i].flatten(), v @ ((v.T @ g[i].flatten()) / lam), atol=1e-12)
    v_per_image = basis.eigvecs[torch.arange(n) % b]
    inside = torch.einsum("npk,nk->np", v_per_image, torch.einsum("npk,np->nk", v_per_image, g.flatten(1)))
    perp = g.flatten(1) - inside
    assert project_reference(perp.reshape(g.shape), basis).abs().max() < 1e-12


def test_reference_projection_drops_null_eigenvalues():
    basis = random_basis(1, 4)
    vals = basis.eigvals.clone()
    vals[0, -1] = 0.0
    out = project_reference(images(2, 4), NGDBasis(vals, basis.eigvecs, (3, 4, 4)))
    assert torch.isfinite(out).all()
    assert (out.flatten(1) @ basis.eigvecs[0][:, -1]).abs().max() < 1e-12


def test_damped_projection_formula_and_limit():
    basis, mu = random_basis(3, 5), 0.3
    g = images(3, 4, seed=3)
    out = project_damped(g, basis, mu)
    eye = torch.eye(48, dtype=DT)
    for i in range(3):
        v, lam = basis.eigvecs[i], basis.eigvals[i]
        explicit = v @ torch.diag(1 / (lam + mu)) @ v.T + (eye - v @ v.T) / mu
        assert torch.allclose(out[i].flatten(), explicit @ g[i].flatten(), atol=1e-12)
        h_k = v @ torch.diag(lam) @ v.T
        solved = torch.linalg.solve(h_k + mu * eye, g[i].flatten())
        assert torch.allclose(out[i].flatten(), solved, atol=1e-10)
    flat = NGDBasis(torch.full_like(basis.eigvals, 1e-14), basis.eigvecs, (3, 4, 4))
    assert torch.allclose(project_damped(g, flat, mu), g / mu, atol=1e-10)


@pytest.mark.parametrize("method", ["scipy", "torch"])
def test_damped_full_rank_equals_dense_solve(embed, method):
    x, g, mu = images(2, 4), images(2, 4, seed=3), 0.05
    basis = NGDBasis.from_images(embed, x, 48, method=method, tol=1e-12)
    hess = dense_hessian(embed, x)
    expected = torch.linalg.solve(hess + mu * torch.eye(48, dtype=DT), g.flatten(1)[..., None])[..., 0]
    assert close(project_damped(g, basis, mu).flatten(1), expected, 1e-9)


def test_projection_bad_inputs():
    basis = random_basis(2, 3)
    with pytest.raises(DDCSInputError, match="g has image shape"):
        project_reference(images(2, 8), basis)
    with pytest.raises(DDCSInputError, match="one basis per image"):
        project_damped(images(3, 4), basis, 0.1)
    with pytest.raises(DDCSInputError, match="mu"):
        project_damped(images(2, 4), basis, 0.0)
    with pytest.raises(DDCSInputError, match="eigvecs"):
        NGDBasis(basis.eigvals, basis.eigvecs[:, :10], (3, 4, 4))
    with pytest.raises(DDCSInputError, match="NGDConfig.refresh_every"):
        NGDConfig(refresh_every=0)
    with pytest.raises(DDCSInputError, match="NGDConfig.mode"):
        NGDConfig(mode="natural")


# --- projector ---------------------------------------------------------------------------------


@pytest.fixture
def hvp_calls(monkeypatch):
    calls = []

    def counting(embed_fn, x, v, **kw):
        calls.append(x.shape[0])
        return hvp_jvp_vjp(embed_fn, x, v, **kw)

    monkeypatch.setattr(lanczos, "hvp_jvp_vjp", counting)
    return calls


def test_damped_projector_refreshes_every_r_steps(embed, hvp_calls):
    proj = NGDProjector(NGDConfig(mode="damped", k=3, mu=0.1, refresh_every=3, tol=1e-8))
    x, g = images(2, 4), images(2, 4, seed=3)
    refreshed = []
    for step in range(10):
        before = len(hvp_calls)
        out = proj(embed, x + 0.01 * step, g, step)
        refreshed.append(len(hvp_calls) > before)
        assert torch.allclose(out, project_damped(g, proj.basis, 0.1))
    assert refreshed == [s % 3 == 0 for s in range(10)]
    assert proj.refreshes == 4 and proj.last_refresh_step == 9
    before = len(hvp_calls)
    proj(embed, x[:1], g[:1], 10)  # new batch size: the old per-image basis cannot serve it
    assert len(hvp_calls) > before and proj.refreshes == 5


def test_reference_projector_prepares_once(embed, hvp_calls):
    proj = NGDProjector(NGDConfig(mode="reference", k=4, tol=1e-8))
    with pytest.raises(RuntimeError, match="prepare"):
        proj(embed, images(3, 4), images(3, 4), 0)
    basis = proj.prepare(embed, images(2, 4, seed=5))
    assert basis.eigvals.shape == (2, 4) and proj.refreshes == 1
    prepared = len(hvp_calls)
    g = images(3, 4, seed=3)
    for step in range(5):
        assert torch.allclose(proj(embed, images(3, 4, seed=step), g, step), project_reference(g, basis))
    assert len(hvp_calls) == prepared
    with pytest.raises(DDCSInputError, match="prepare is for mode='reference'"):
        NGDProjector(NGDConfig(mode="damped")).prepare(embed, images(2, 4))
