"""Latent optimisation in W space against the victim, through random augmentations.

One w per image broadcast to every synthesis layer (PPA's `single_w`): W keeps the generator's
image prior stronger than W+, which matters for a small generator trained on few faces.
"""

from __future__ import annotations

import torch

from ddcs_core.attacks.augment import AugmentConfig, random_transform
from ddcs_core.attacks.losses import identity_loss
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.stylegan2 import Generator


def optimize_latents(
    G: Generator,
    victim: torch.nn.Module,
    w: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    lr: float,
    betas: tuple[float, float],
    loss: str,
    augment: AugmentConfig,
    seed: int,
) -> torch.Tensor:
    """Adam on w (N, w_dim) minimising the identity loss of victim(aug(G(w))) for `labels`; G and the
    victim stay frozen. Returns the optimised w (detached, on w's device)."""
    if steps < 0 or not lr > 0:
        raise DDCSInputError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    loss_fn = identity_loss(loss)
    device = G.const.device
    gen = torch.Generator().manual_seed(seed)
    w = w.detach().clone().to(device).requires_grad_(True)
    y = labels.to(device)
    opt = torch.optim.Adam([w], lr=lr, betas=tuple(betas))
    frozen = [p for m in (G, victim) for p in m.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            images = G.synthesis(w, noise_mode="const")
            value = loss_fn(victim(random_transform(images, augment, gen)), y).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return w.detach()
