"""Victim and evaluation classifiers: two small networks of different families.

The attack is judged by an evaluation model that did not guide it, so the two must not share an
architecture family: the victim is a compact ResNet, the evaluator a plain VGG-style conv-BN stack.
Both take images in [-1, 1] at any size (resized bilinearly to `input_size` inside, so 128 px
reconstructions can be scored), normalise internally, and expose penultimate `features` for KNN
distances.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import register

# ImageNet statistics: a fixed, documented normalisation; BatchNorm absorbs any mismatch.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


class _Classifier(nn.Module):
    """Shared input handling: grey→RGB, resize to `input_size`, [-1, 1] → normalised."""

    def __init__(self, num_classes: int, input_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if num_classes < 2 or input_size < 8:
            raise DDCSInputError(f"need num_classes >= 2 and input_size >= 8, got {num_classes}, {input_size}")
        if len(mean) != 3 or len(std) != 3:
            raise DDCSInputError("mean and std need 3 values (RGB)")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.input_size, self.input_size):
            shrink = x.shape[-1] > self.input_size or x.shape[-2] > self.input_size
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=shrink
            )
        return ((x + 1) * 0.5 - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim) after global average pooling."""
        return self.embed(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class ResNetS(_Classifier):
    """Compact ResNet: a two-conv stem that halves the resolution, then one stage of BasicBlocks per
    width (each later stage halves again), global average pooling, dropout, linear head."""

    def __init__(
        self,
        num_classes: int = 62,
        input_size: int = 64,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (1, 1, 2, 1),
        stem_width: int = 24,
        dropout: float = 0.2,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
    ):
        super().__init__(num_classes, input_size, mean, std)
        if len(widths) != len(blocks) or not widths or min(blocks) < 1:
            raise DDCSInputError("widths and blocks need the same non-zero length, each stage >= 1 block")
        self.config = dict(
            num_classes=num_classes, input_size=input_size, widths=list(widths), blocks=list(blocks),
            stem_width=stem_width, dropout=dropout, mean=list(mean), std=list(std),
        )
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*layers)
        self.feature_dim = cin
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        _init_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class VGGBNS(_Classifier):
    """Plain VGG-style stack: conv3×3-BN-ReLU layers, max-pooling between stages, global average pooling.
    `stages` lists the conv widths of each stage; every stage ends with a 2×2 max-pool."""

    def __init__(
        self,
        num_classes: int = 62,
        input_size: int = 64,
        stages: Sequence[Sequence[int]] = ((16,), (48,), (96, 96), (192, 192)),
        dropout: float = 0.3,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
    ):
        super().__init__(num_classes, input_size, mean, std)
        if not stages or not all(stages):
            raise DDCSInputError("stages need at least one conv each")
        self.config = dict(
            num_classes=num_classes, input_size=input_size, stages=[list(s) for s in stages],
            dropout=dropout, mean=list(mean), std=list(std),
        )
        layers: list[nn.Module] = []
        cin = 3
        for stage in stages:
            for w in stage:
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        _init_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    for m in model.modules():  # zero-init the last BN of each residual branch: blocks start as identity
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


CLASSIFIERS = {"resnet-s": ResNetS, "vggbn-s": VGGBNS}
for _name, _cls in CLASSIFIERS.items():
    register(_name)(_cls)


def build_classifier(arch: str, **config) -> _Classifier:
    """A fresh classifier of a registered arch (`resnet-s` victim or `vggbn-s` evaluator)."""
    if arch not in CLASSIFIERS:
        raise DDCSInputError(f"unknown classifier arch {arch!r} (known: {sorted(CLASSIFIERS)})")
    try:
        return CLASSIFIERS[arch](**config)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"bad config for classifier {arch!r}: {e}") from e
