"""Hessian-vector products of the LPIPS distance, H v with H = 2 JᵀJ.

d(x, x') = |e(x) − e(x')|², so the Hessian in x' at x' = x is exactly 2 JᵀJ (J = ∂e/∂x): the
residual term vanishes at x' = x. That makes H v cheap (one JVP, one VJP) and never needs H itself.

Every function here treats `embed_fn` as a deterministic per-image map: row i of `embed_fn(x)` may
depend on x[i] only, so the batched J is block-diagonal and one batched call gives every image's own
H v. That holds for conv/ReLU/pooling/channel-normalisation nets in eval mode, and fails for
train-mode batch-norm (mixes images) or dropout (random); such an `embed_fn` gives silently wrong H.
"""

from typing import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp

from ddcs_core.errors import DDCSInputError

EmbedFn = Callable[[Tensor], Tensor]

_MODES = ("auto", "forward", "double_vjp")


def check_images(x: Tensor, name: str = "x") -> None:
    """Raise DDCSInputError naming `name` unless x is a non-empty floating (N, C, H, W) batch."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DDCSInputError(f"{name} must be a floating (N, C, H, W) tensor, got {got}")
    if x.shape[0] == 0:
        raise DDCSInputError(f"{name} is an empty batch")


def _check_pair(x: Tensor, v: Tensor) -> None:
    check_images(x)
    if not isinstance(v, Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise DDCSInputError(f"v must have the shape of x {tuple(x.shape)}, got {got}")
    if v.dtype != x.dtype or v.device != x.device:
        raise DDCSInputError(
            f"v must match x's dtype/device ({x.dtype}, {x.device}), got ({v.dtype}, {v.device})"
        )


def _flat(embed_fn: EmbedFn, n: int) -> EmbedFn:
    """Wrap embed_fn so that it returns (N, D) and fails clearly on a wrong batch dimension."""

    def f(z: Tensor) -> Tensor:
        e = embed_fn(z)
        if not isinstance(e, Tensor) or e.ndim < 1 or e.shape[0] != n:
            got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
            raise DDCSInputError(f"embed_fn must return one embedding row per image ({n}, D), got {got}")
        return e.reshape(n, -1)

    return f


def _hvp_forward(f: EmbedFn, x: Tensor, v: Tensor) -> Tensor:
    # vjp of (x ↦ e(x)) with J v as auxiliary output: one dual forward pass, one backward pass.
    _, vjp_fn, jv = vjp(lambda z: jvp(f, (z,), (v,)), x, has_aux=True)
    (hv,) = vjp_fn(2.0 * jv)
    return hv


def _hvp_double_vjp(f: EmbedFn, x: Tensor, v: Tensor) -> Tensor:
    # J v as the derivative of u ↦ <Jᵀu, v> (linear in u): needs double backward, not forward AD.
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        e = f(xr)
        u = torch.zeros_like(e, requires_grad=True)
        (jtu,) = torch.autograd.grad(e, xr, u, create_graph=True)
        (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
        (hv,) = torch.autograd.grad(e, xr, 2.0 * jv)
    return hv


def hvp_jvp_vjp(embed_fn: EmbedFn, x: Tensor, v: Tensor, *, mode: str = "auto") -> Tensor:
    """H v = 2 Jᵀ(J v) for every image of the batch (x, v: (N, C, H, W)).

    mode "forward" uses torch.func forward-mode AD for J v; "double_vjp" gets J v by differentiating
    a VJP (for ops without forward-AD rules); "auto" tries forward and falls back on every call, so
    pass "double_vjp" for such an embed_fn in hot loops. Parameters' .grad is never touched, and the
    result carries no graph.
    """
    _check_pair(x, v)
    if mode not in _MODES:
        raise DDCSInputError(f"mode must be one of {_MODES}, got {mode!r}")
    f = _flat(embed_fn, x.shape[0])
    x, v = x.detach(), v.detach()
    if mode == "double_vjp":
        return _hvp_double_vjp(f, x, v).detach()
    try:
        with torch.no_grad():  # function transforms ignore it; it keeps parameters out of any graph
            return _hvp_forward(f, x, v).detach()
    except (RuntimeError, NotImplementedError) as err:
        if mode == "forward" or isinstance(err, torch.OutOfMemoryError):
            raise
    return _hvp_double_vjp(f, x, v).detach()


def hvp_double_backprop(embed_fn: EmbedFn, x: Tensor, v: Tensor, *, at: Tensor | None = None) -> Tensor:
    """H v by differentiating ∇_{x'} d(x, x') once more at x' = x: an independent check of H = 2JᵀJ.

    Nothing here assumes the Gauss-Newton form; it is the plain Hessian of the distance. `at` moves
    the point: the Hessian of x' ↦ d(x, x') at x' = at (same shape as x), as the paper's code takes
    it slightly off x' = x. Off the point H = 2JᵀJ + 2 Σ_d r_d ∇²e_d with r = e(at) − e(x): still
    symmetric, PSD up to that small residual term.
    """
    _check_pair(x, v)
    if at is not None:
        _check_pair(x, at)
    f = _flat(embed_fn, x.shape[0])
    x, v = x.detach(), v.detach()
    with torch.no_grad():
        target = f(x)
    xp = (x if at is None else at.detach()).clone().requires_grad_(True)
    with torch.enable_grad():
        dist = (f(xp) - target).pow(2).sum()  # images are independent, so the sum separates
        (grad,) = torch.autograd.grad(dist, xp, create_graph=True)
        (hv,) = torch.autograd.grad(grad, xp, v)
    return hv.detach()


def dense_hessian(embed_fn: EmbedFn, x: Tensor) -> Tensor:
    """The full Hessian of x' ↦ d(x_i, x') at x' = x_i, (N, P, P) with P = C·H·W. Tiny problems only.

    Computed by torch.autograd.functional.hessian, so it checks the HVPs without sharing their code.
    """
    check_images(x)
    x = x.detach()
    f = _flat(embed_fn, 1)
    out = []
    for xi in x:
        with torch.no_grad():
            target = f(xi[None])

        def dist(z: Tensor, target: Tensor = target) -> Tensor:
            return (f(z[None]) - target).pow(2).sum()

        h = torch.autograd.functional.hessian(dist, xi, vectorize=True)
        out.append(h.reshape(xi.numel(), xi.numel()))
    return torch.stack(out)
