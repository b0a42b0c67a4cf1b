"""The official DDCS code's image preparation, step by step (the `official` evaluation profile).

The paper's `evaluate.py` prepares images differently from our `paper` profile (PIL resize of uint8
images to 256x256), and on 64 px faces that moves DDCS by a few percent. What it does:

1. Targets: torchvision ``Resize(resolution)`` on the PIL image, i.e. PIL bilinear with the *shorter*
   edge set to the generator's resolution and the aspect ratio kept; then ``ToTensor`` and
   ``Normalize(0.5, 0.5)``: float in [-1, 1].
2. Reconstructions: read at their own (the generator's) size, float in [-1, 1], no resize.
3. LPIPS-VGG: both sets, as float tensors, through ``F.interpolate(size=256, mode="bilinear",
   align_corners=True)``, no clamping, then the network.
4. FID and coverage: pytorch-fid's FID Inception (pool3) on ``Resize(256)`` of the float tensors
   (bilinear, half-pixel centres), which the network then interpolates to 299x299.

Not reproduced: the official script's ``--crop`` (off by default) and its concatenation of several
reconstruction folders batch by batch (we evaluate one folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ddcs_core.data.images import ImageSet, list_image_folder, load_images, read_images
from ddcs_core.errors import DDCSInputError

LPIPS_SIZE = 256
INCEPTION_PRE_SIZE = 256


def short_edge_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(H, W) after torchvision ``Resize(resolution)``: shorter edge to `resolution`, longer one truncated."""
    if resolution < 1:
        raise DDCSInputError(f"--size must be a positive resolution, got {resolution}")
    if width <= height:
        return int(resolution * height / width), resolution
    return resolution, int(resolution * width / height)


def resize_short_edge(img: Image.Image, resolution: int) -> Image.Image:
    """PIL bilinear to the shorter-edge size, as torchvision's Resize does on PIL images."""
    h, w = short_edge_size(img.height, img.width, resolution)
    return img if (img.height, img.width) == (h, w) else img.resize((w, h), Image.BILINEAR)


def load_official_pair(targets_path: str | Path, recon_path: str | Path, resolution: int | None,
                       progress: bool) -> tuple[ImageSet, ImageSet, list[str]]:
    """Reconstructions at their native size; targets resized to the generator's resolution (step 1)."""
    recon = load_images(recon_path, progress=progress)
    h, w = recon.size
    res = resolution or min(h, w)
    path = Path(targets_path)
    if path.is_dir():
        files, labels, class_names = list_image_folder(path)
        images = read_images(files, transform=lambda im: resize_short_edge(im, res), progress=progress,
                             desc=f"reading {path.name}")
        targets = ImageSet(images, labels, class_names, [str(f) for f in files], str(path))
    else:
        native = load_images(path, progress=progress)
        images = np.stack([np.asarray(resize_short_edge(Image.fromarray(a), res)) for a in native.images])
        targets = ImageSet(images, native.labels, native.class_names, native.paths, native.source)
    if targets.size != recon.size:
        raise DDCSInputError(
            f"{targets_path}: targets are {targets.size[0]}x{targets.size[1]} after resizing their shorter edge to "
            f"{res}, but the reconstructions are {h}x{w}; the official profile needs both sets at one size")
    notes = [f"official preparation: targets resized (PIL bilinear, shorter edge) to {res}; both sets as float "
             f"[-1, 1] through F.interpolate({LPIPS_SIZE}, bilinear, align_corners=True) before LPIPS"]
    return targets, recon, notes


class OfficialLPIPSInput(nn.Module):
    """An LPIPS network fed as the official code feeds it: float input stretched to 256x256 with
    ``align_corners=True`` (step 3), so every other part of the exact pairwise search stays as is."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    @property
    def feature_name(self) -> str:
        return f"{self.network.feature_name}-official{LPIPS_SIZE}"

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="bilinear", align_corners=True)
        return self.network(x, out=out)


def use_official_input(metric) -> None:
    """Make a PerceptualDistance see images as the official code does.

    Its embedding cache is keyed by backbone and image content only; the same native images embedded
    without this stretching would share the key, so the cache is switched off for this metric.
    """
    metric.model = OfficialLPIPSInput(metric.model)
    metric.cache = False


def inception_input(x: torch.Tensor) -> torch.Tensor:
    """Step 4's ``transforms.Resize(256)`` on a float NCHW batch in [-1, 1] (shorter edge, antialiased)."""
    h, w = short_edge_size(x.shape[-2], x.shape[-1], INCEPTION_PRE_SIZE)
    if (h, w) == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
