"""Conversions between stored uint8 NHWC images and the engine's float [-1, 1] NCHW tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddcs_core.choices import RESIZE_POLICIES
from ddcs_core.errors import DDCSInputError


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) → float32 (N, C, H, W) in [-1, 1], the range LPIPS and the GAN expect."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DDCSInputError(f"images must be a uint8 (N, H, W, C) array, got {got}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.to(torch.float32).div_(127.5).sub_(1.0).contiguous()


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] → uint8 (N, H, W, C), rounded; out-of-range values are clamped."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise DDCSInputError(f"tensor must be (N, C, H, W), got {got}")
    x = tensor.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise DDCSInputError("tensor contains NaN or inf; cannot convert to an image")
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round_()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def resize(tensor: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an NCHW batch, without antialiasing, as lpips upsamples to 256×256."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise DDCSInputError(f"size must be a positive int or (H, W), got {size!r}")
    if tuple(tensor.shape[-2:]) == hw:
        return tensor
    return F.interpolate(tensor, size=hw, mode="bilinear", align_corners=False, antialias=False)


def center_crop_face(img: Image.Image, crop: int, out: int) -> Image.Image:
    """The central crop×crop square resized to out×out (PIL bilinear): aligned faces sit at the centre."""
    w, h = img.size
    if not 1 <= crop <= min(w, h) or out < 1:
        raise DDCSInputError(f"crop {crop} must fit the {w}x{h} image and out {out} must be positive")
    left, top = (w - crop) // 2, (h - crop) // 2
    return img.crop((left, top, left + crop, top + crop)).resize((out, out), Image.BILINEAR)


def fit_square(img: Image.Image, size: int, policy: str = "stretch") -> Image.Image:
    """img at size×size (PIL bilinear) by a policy: stretch (aspect ratio changes), center-crop (the
    central square, edges lost) or pad (black borders around the whole image)."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if policy == "center-crop" and w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    elif policy == "pad" and w != h:
        side = max(w, h)
        canvas = Image.new(img.mode, (side, side))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    elif policy not in RESIZE_POLICIES:
        raise DDCSInputError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")
    return img.resize((size, size), Image.BILINEAR)
