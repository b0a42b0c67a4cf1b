"""Top-k eigenpairs of the (symmetric PSD) LPIPS Hessian, seen only through its HVP.

Two interchangeable methods: ARPACK (`scipy`, implicitly restarted, robust, CPU round trip per
product) and a pure-torch Lanczos with full reorthogonalisation (`torch`: stays on the operator's
device, syncs only at periodic convergence checks, and runs a whole batch of images in lock-step so
each iteration is one batched HVP). Both return eigenvalues sorted descending and orthonormal vectors.
"""

from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor

from ddcs_core.errors import DDCSInputError
from ddcs_core.geometry.hvp import EmbedFn, check_images, hvp_double_backprop, hvp_jvp_vjp

METHODS = ("scipy", "torch")


class LanczosNotConverged(RuntimeError):
    """Ritz pairs missed `tol` within `maxiter`; `eigvals`/`eigvecs` hold the best ones found."""

    def __init__(self, message: str, eigvals: Tensor, eigvecs: Tensor) -> None:
        super().__init__(message)
        self.eigvals = eigvals
        self.eigvecs = eigvecs


def _check_args(dim: int, k: int, tol: float, maxiter: int | None, method: str) -> None:
    if not isinstance(dim, int) or dim < 1:
        raise DDCSInputError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(k, int) or not 1 <= k <= dim:
        raise DDCSInputError(f"k must be an int in [1, dim={dim}], got {k!r}")
    if not tol > 0:
        raise DDCSInputError(f"tol must be > 0, got {tol!r}")
    if maxiter is not None and (not isinstance(maxiter, int) or maxiter < 1):
        raise DDCSInputError(f"maxiter must be None or a positive int, got {maxiter!r}")
    if method not in METHODS:
        raise DDCSInputError(f"method must be one of {METHODS}, got {method!r}")


def _ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs of the batched tridiagonal T (diagonal alpha, off-diagonal beta), descending."""
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    vals, vecs = torch.linalg.eigh(t)
    return vals.flip(-1), vecs.flip(-1)


def _lanczos(
    op: Callable[[Tensor], Tensor],
    n: int,
    dim: int,
    k: int,
    tol: float,
    maxiter: int | None,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Batched Lanczos, full reorthogonalisation: op maps (n, dim) → (n, dim), one operator per row.

    Converged when every top-k Ritz residual |β_m s_m,i| ≤ tol·θ_max. An invariant subspace (rank-
    deficient H, repeated eigenvalues) restarts from a random vector orthogonal to the basis, chosen
    without a host sync. Memory: n·(m+1)·dim values for the basis.
    """
    m_max = min(dim, maxiter if maxiter is not None else max(10 * k, 100))
    if m_max < k:
        raise DDCSInputError(f"maxiter={maxiter} must be at least k={k} for method='torch'")
    first, every = min(m_max, max(2 * k, k + 10)), max(5, k // 2)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    q = torch.zeros(n, m_max + 1, dim, device=device, dtype=dtype)
    alpha = torch.zeros(n, m_max, device=device, dtype=dtype)
    beta = torch.zeros_like(alpha)
    anorm = torch.zeros(n, device=device, dtype=dtype)
    start = torch.randn(n, dim, generator=gen, device=device, dtype=dtype)
    q[:, 0] = start / start.norm(dim=-1, keepdim=True)
    for j in range(m_max):
        w = op(q[:, j])
        alpha[:, j] = (q[:, j] * w).sum(-1)
        anorm = torch.maximum(anorm, w.norm(dim=-1))
        cand = torch.stack([w, torch.randn(n, dim, generator=gen, device=device, dtype=dtype)], 1)
        basis = q[:, : j + 1]
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to working precision
            cand = cand - (cand @ basis.transpose(1, 2)) @ basis
        b = cand[:, 0].norm(dim=-1)
        ok = b > 100 * eps * anorm
        fresh = cand[:, 1] / cand[:, 1].norm(dim=-1, keepdim=True).clamp_min(tiny)
        beta[:, j] = torch.where(ok, b, torch.zeros_like(b))
        q[:, j + 1] = torch.where(ok[:, None], cand[:, 0] / b.clamp_min(tiny)[:, None], fresh)
        m = j + 1
        if m == m_max or (m >= first and (m - first) % every == 0):
            theta, s = _ritz(alpha[:, :m], beta[:, : m - 1])
            res = beta[:, m - 1, None].abs() * s[:, -1, :k].abs()
            converged = m == dim or bool((res <= tol * theta[:, :1].abs()).all())
            if converged:
                break
    vals, vecs = theta[:, :k], q[:, :m].transpose(1, 2) @ s[:, :, :k]
    if not converged:
        worst = (res / theta[:, :1].abs().clamp_min(tiny)).max().item()
        raise LanczosNotConverged(
            f"torch Lanczos: relative residual {worst:.2e} > tol={tol} after {m} products; raise maxiter",
            vals,
            vecs,
        )
    return vals, vecs


def _apply(hvp: Callable[[Tensor], Tensor], v: Tensor, dim: int) -> Tensor:
    out = hvp(v)
    if not isinstance(out, Tensor) or out.numel() != dim:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise DDCSInputError(f"hvp must map a ({dim},) vector to a ({dim},) vector, got {got}")
    return out.detach().reshape(dim)


def _eigsh(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    k: int,
    tol: float,
    maxiter: int | None,
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    def matvec(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.array(v, dtype=np.float64).reshape(dim)).to(device, dtype)
        return _apply(hvp, t, dim).to("cpu", torch.float64).numpy()

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        vals, vecs = eigsh(op, k=k, which="LA", tol=tol, maxiter=maxiter, v0=v0)
    except ArpackNoConvergence as err:
        order = np.argsort(err.eigenvalues)[::-1]
        raise LanczosNotConverged(
            f"ARPACK: only {len(order)} of {k} eigenpairs converged to tol={tol}; raise maxiter",
            torch.from_numpy(err.eigenvalues[order].copy()).to(device, dtype),
            torch.from_numpy(err.eigenvectors[:, order].copy()).to(device, dtype),
        ) from err
    order = np.argsort(vals)[::-1]
    return (
        torch.from_numpy(vals[order].copy()).to(device, dtype),
        torch.from_numpy(vecs[:, order].copy()).to(device, dtype),
    )


def top_eigenpairs(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    k: int,
    *,
    tol: float = 1e-6,
    maxiter: int | None = None,
    seed: int = 0,
    method: str = "scipy",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs of one symmetric PSD operator: ((k,) descending values, (dim, k) orthonormal).

    `hvp` maps a (dim,) tensor on `device`/`dtype` to its product. `maxiter` is ARPACK's restart cap
    for "scipy" and the Krylov dimension cap (= number of products, default max(10k, 100)) for
    "torch". ARPACK cannot return all `dim` pairs, so k == dim runs "torch" (exact after dim steps).
    Raises LanczosNotConverged when tol is not reached.
    """
    _check_args(dim, k, tol, maxiter, method)
    if method == "scipy" and k < dim:
        return _eigsh(hvp, dim, k, tol, maxiter, seed, device, dtype)
    def op(v: Tensor) -> Tensor:
        return _apply(hvp, v[0], dim)[None]

    vals, vecs = _lanczos(op, 1, dim, k, tol, maxiter, seed, device, dtype)
    return vals[0], vecs[0]


def top_eigenpairs_batch(
    embed_fn: EmbedFn,
    x: Tensor,
    k: int,
    *,
    tol: float = 1e-6,
    maxiter: int | None = None,
    seed: int = 0,
    method: str = "scipy",
    at: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs of each image's LPIPS Hessian: ((N, k) values, (N, P, k) vectors), P = C·H·W.

    "torch" runs all N images in one batched Lanczos (one batched HVP per iteration, on x's device);
    "scipy" runs ARPACK image by image. Results are in x's dtype and device. `at` (shape of x) takes
    the Hessian of x' ↦ d(x, x') at x' = at instead of at x' = x (exact, by double backprop).
    """
    check_images(x)
    n, dim = x.shape[0], x[0].numel()
    _check_args(dim, k, tol, maxiter, method)
    x = x.detach()
    if at is not None and (not isinstance(at, Tensor) or at.shape != x.shape):
        raise DDCSInputError(f"at must have the shape of x {tuple(x.shape)}, got {getattr(at, 'shape', at)}")

    def product(xs: Tensor, v: Tensor, ats: Tensor | None) -> Tensor:
        if ats is None:
            return hvp_jvp_vjp(embed_fn, xs, v)
        return hvp_double_backprop(embed_fn, xs, v, at=ats)

    if method == "torch" or k == dim:
        def op(v: Tensor) -> Tensor:
            return product(x, v.reshape(x.shape), at).reshape(n, dim)

        return _lanczos(op, n, dim, k, tol, maxiter, seed, x.device, x.dtype)
    vals, vecs = [], []
    for i in range(n):
        xi = x[i : i + 1]
        ai = None if at is None else at[i : i + 1]

        def hvp(v: Tensor, xi: Tensor = xi, ai: Tensor | None = ai) -> Tensor:
            return product(xi, v.reshape(xi.shape), ai).reshape(dim)

        lam, vec = _eigsh(hvp, dim, k, tol, maxiter, seed, x.device, x.dtype)
        vals.append(lam)
        vecs.append(vec)
    return torch.stack(vals), torch.stack(vecs)
