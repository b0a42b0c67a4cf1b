"""IR / IR-SE face backbones (ArcFace-style improved-residual ResNets) with a classification head.

The model-inversion literature's face victims and evaluators (GMI, KEDMI and their successors) are
face.evoLVe's IR-50 / IR-152 backbones with a linear identity head. Users' checkpoints are plain state
dicts of those modules, so the layout and the attribute names here follow them exactly:

  `ir50`, `irse50`, `ir152`, ... (112 px, or 224 with input_size): `feature.input_layer`,
      `feature.body.<i>` (`shortcut_layer`, `res_layer`), `feature.output_layer`, `fc_layer`
      (the "FaceNet" classifier: a backbone that ends in its own 512-d embedding layer)
  `ir50-64`, `ir152-64` (64 px): `feature.input_layer`, `feature.body.<i>`, then `output_layer` and
      `fc_layer` at the top (the "FaceNet64" / "IR152" classifiers of the 64 px CelebA setting)

A unit is BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN (-> squeeze-excitation in IR-SE) plus a
shortcut (identity as a 1x1 max-pool with the stride, or conv1x1 + BN when the width changes).
"""

from __future__ import annotations

import torch
from torch import nn

# (width, units) per stage; the first unit of each stage halves the resolution.
_STAGES = {
    50: ((64, 3), (128, 4), (256, 14), (512, 3)),
    100: ((64, 3), (128, 13), (256, 30), (512, 3)),
    152: ((64, 3), (128, 8), (256, 36), (512, 3)),
}
EMBED_DIM = 512


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se: bool):
        super().__init__()
        if cin == cout:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        layers = [
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if se:
            layers.append(SqueezeExcite(cout))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _output_layer(spatial: int) -> nn.Sequential:
    """BN -> dropout -> flatten -> linear to the 512-d embedding -> BN1d."""
    return nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(), nn.Flatten(),
                         nn.Linear(512 * spatial * spatial, EMBED_DIM), nn.BatchNorm1d(EMBED_DIM))


class IRBackbone(nn.Module):
    def __init__(self, depth: int, se: bool, output_spatial: int | None):
        super().__init__()
        if depth not in _STAGES:
            raise ValueError(f"IR depth must be one of {sorted(_STAGES)}, got {depth}")
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, cin = [], 64
        for width, n in _STAGES[depth]:
            for j in range(n):
                units.append(IRUnit(cin, width, 2 if j == 0 else 1, se))
                cin = width
        self.body = nn.Sequential(*units)
        if output_spatial is not None:
            self.output_layer = _output_layer(output_spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.input_layer(x))
        return self.output_layer(x) if hasattr(self, "output_layer") else x


class IRClassifier(nn.Module):
    """An IR / IR-SE backbone, its 512-d embedding, and a linear identity head `fc_layer`.

    `top_output_layer` selects the 64 px layout, whose embedding layer sits beside `feature`
    instead of inside it. The input must be exactly `input_size` square (the embedding layer is a
    linear map of the flattened last feature map).
    """

    def __init__(self, num_classes: int, depth: int = 50, se: bool = False, input_size: int = 112,
                 top_output_layer: bool = False):
        super().__init__()
        if input_size % 16 or input_size < 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        spatial = input_size // 16
        self.input_size = input_size
        self.feature = IRBackbone(depth, se, None if top_output_layer else spatial)
        if top_output_layer:
            self.output_layer = _output_layer(spatial)
        self.fc_layer = nn.Linear(EMBED_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"IR classifier expects {self.input_size}x{self.input_size} inputs, got "
                             f"{x.shape[-2]}x{x.shape[-1]} (declare a resize in the preprocessing)")
        f = self.feature(x)
        if hasattr(self, "output_layer"):
            f = self.output_layer(f)
        return self.fc_layer(f)


# name -> (depth, squeeze-excitation, default input size, 64 px layout)
IR_ARCHS = {
    "ir50": (50, False, 112, False),
    "irse50": (50, True, 112, False),
    "ir100": (100, False, 112, False),
    "irse100": (100, True, 112, False),
    "ir152": (152, False, 112, False),
    "irse152": (152, True, 112, False),
    "ir50-64": (50, False, 64, True),
    "ir152-64": (152, False, 64, True),
}


def build_ir(name: str, num_classes: int, input_size: int | None = None) -> IRClassifier:
    depth, se, default_size, top = IR_ARCHS[name]
    return IRClassifier(num_classes, depth, se, input_size or default_size, top)
