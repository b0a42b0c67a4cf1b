"""Plug-and-Play style model inversion: initial selection, W-space optimisation, final selection, pools."""

from ddcs_core.attacks.augment import AugmentConfig, random_transform
from ddcs_core.attacks.inversion import AttackResult, InversionConfig, dual_pool, invert
from ddcs_core.attacks.losses import cross_entropy_loss, entropy_loss, identity_loss, poincare_loss
from ddcs_core.attacks.optimize import optimize_latents
from ddcs_core.attacks.selection import class_confidence, final_selection, initial_selection, transform_scores

__all__ = [
    "AugmentConfig", "random_transform", "AttackResult", "InversionConfig", "dual_pool", "invert",
    "cross_entropy_loss", "entropy_loss", "identity_loss", "poincare_loss", "optimize_latents",
    "class_confidence", "final_selection", "initial_selection", "transform_scores",
]
