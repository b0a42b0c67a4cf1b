"""Tiny attack worlds for the transfer/attack/experiment tests: 32 px, a few channels, 3 classes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ddcs_core.data.images import ImageSet
from ddcs_core.models.classifiers import build_classifier
from ddcs_core.models.stylegan2 import Discriminator, Generator

RES = 32
G_TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
D_TINY = dict(channel_base=128, channel_max=16)


def tiny_gan(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G = Generator(img_resolution=RES, **G_TINY)
    D = Discriminator(img_resolution=RES, **D_TINY)
    return G.eval(), D


def tiny_classifier(arch: str = "resnet-s", classes: int = 3, seed: int = 0) -> nn.Module:
    """A random classifier whose head is scaled up so its softmax is far from uniform."""
    torch.manual_seed(seed)
    if arch == "resnet-s":
        model = build_classifier(arch, num_classes=classes, input_size=RES, widths=[8, 16], blocks=[1, 1], stem_width=8)
    else:
        model = build_classifier(arch, num_classes=classes, input_size=RES, stages=[[8], [16]])
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    return model.eval()


def tiny_embed(seed: int = 0) -> nn.Module:
    """LPIPS-shaped stand-in embedding (conv, ReLU, unit-normalised channels, flattened)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x))
            return (h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)).flatten(1)

    return Embed().requires_grad_(False)


def public_images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def targets(per_class: int = 4, classes: int = 3, seed: int = 1) -> ImageSet:
    images = np.random.default_rng(seed).integers(0, 256, (per_class * classes, RES, RES, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    names = [f"person_{i}" for i in range(classes)]
    return ImageSet(images, labels, names, [f"t/{i}.png" for i in range(len(labels))], "tiny-targets")
