"""Identity losses for inversion and the entropy loss for transfer learning.

Poincaré (Plug-and-Play Attacks): the distance in the Poincaré ball between the L1-normalised logits
and a slightly shrunk one-hot target. Unlike cross-entropy it does not saturate once the target
class wins, and it ignores the logits' overall scale, so latents keep moving toward the class
centre instead of toward ever larger logits (adversarial features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddcs_core.errors import DDCSInputError

ONE_HOT_SHRINK = 1e-5  # keeps the target strictly inside the unit ball, where the metric is finite


def poincare_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample Poincaré distance arcosh(1 + 2‖u−v‖² / ((1−‖u‖²)(1−‖v‖²))), u = logits/‖logits‖₁,
    v = one-hot(target)·(1 − 1e-5). Returns (N,)."""
    u = logits / logits.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
    v = F.one_hot(targets, logits.shape[1]).to(logits.dtype) * (1 - ONE_HOT_SHRINK)
    uu = u.square().sum(dim=1)
    vv = v.square().sum(dim=1)
    delta = 2 * (u - v).square().sum(dim=1) / ((1 - uu) * (1 - vv)).clamp_min(1e-12)
    return torch.acosh(1 + delta)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (N,)."""
    return F.cross_entropy(logits, targets, reduction="none")


IDENTITY_LOSSES = {"poincare": poincare_loss, "ce": cross_entropy_loss}


def identity_loss(name: str):
    """The per-sample loss function called `name` ('poincare' or 'ce')."""
    if name not in IDENTITY_LOSSES:
        raise DDCSInputError(f"inversion loss must be one of {sorted(IDENTITY_LOSSES)}, got {name!r}")
    return IDENTITY_LOSSES[name]


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_adv = −Σ_i Σ_c p_ic log p_ic with p = softmax(logits): summed over the batch (DESIGN §2)."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum()
