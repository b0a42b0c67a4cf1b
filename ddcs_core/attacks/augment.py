"""Random flips, crops and translations of a whole batch in one differentiable op.

Inversion optimises latents against a victim that sees every image through a fresh random transform,
so the latents cannot exploit single-pixel quirks of the victim (Plug-and-Play's robustness trick).
Each image gets its own affine map (flip, zoom into a crop of relative area `scale`, shift) applied
by one `grid_sample` call; parameters are drawn on the CPU from the caller's generator, so a seed
gives the same transforms on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ddcs_core.errors import DDCSInputError, config_from_dict


@dataclass(frozen=True)
class AugmentConfig:
    """flip: random horizontal flips; scale: range of the crop's side relative to the image (1 = no
    crop); shift: largest translation as a fraction of the image side."""

    flip: bool = True
    scale: tuple[float, float] = (0.9, 1.0)
    shift: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi <= 1:
            raise DDCSInputError(f"augment scale must satisfy 0 < low <= high <= 1, got {self.scale!r}")
        if not 0 <= float(self.shift) <= 0.5:
            raise DDCSInputError(f"augment shift must lie in [0, 0.5], got {self.shift!r}")
        object.__setattr__(self, "scale", (lo, hi))
        object.__setattr__(self, "shift", float(self.shift))

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = config_from_dict(cls, d, "augment")
        if "scale" in d:
            d["scale"] = tuple(d["scale"])
        return cls(**d)


def random_transform(x: torch.Tensor, config: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x (N, C, H, W) seen through one random flip/crop/shift per image; same size, differentiable.

    The crop keeps a `s`-sided square (s drawn from config.scale) and resamples it to the full size
    (bilinear, border-padded so zooming never shows black edges); the shift moves it by up to
    `config.shift` of the side, staying inside the image where the crop leaves room.
    """
    if x.ndim != 4:
        raise DDCSInputError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    n = x.shape[0]
    lo, hi = config.scale
    s = lo + (hi - lo) * torch.rand(n, generator=gen)
    room = (1 - s).clamp_min(0) + 2 * config.shift
    t = (torch.rand(2, n, generator=gen) * 2 - 1) * room
    sign = torch.ones(n)
    if config.flip:
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = s * sign
    theta[:, 1, 1] = s
    theta[:, 0, 2] = t[0]
    theta[:, 1, 2] = t[1]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
