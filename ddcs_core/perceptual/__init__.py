"""LPIPS with offline backbone weights, as an exact embedding; fast exact pairwise distances."""

from ddcs_core.perceptual.network import LPIPSNetwork
from ddcs_core.perceptual.pairwise import Embedded, PerceptualDistance, resolve_device

__all__ = ["LPIPSNetwork", "PerceptualDistance", "Embedded", "resolve_device"]
