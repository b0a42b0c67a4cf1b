"""Classifier input preprocessing declared as data, run as differentiable torch ops.

A victim sees what the generator draws only through the preprocessing its owner trained it with (a
face crop, a resize, a normalisation). Declaring those steps as data lets a world config state them,
and running them as plain tensor ops inside the model keeps the attack's gradients flowing through
them back to the generator. Images enter in the generator's range [-1, 1] (NCHW); `to_unit_range`
maps them to [0, 1], which `normalize` requires before it, because every common convention
(torchvision, face.evoLVe, Plug-and-Play Attacks) states its mean/std on [0, 1] images.

Steps (a YAML list of one-key mappings, or a preset name):
  center_crop: S | [H, W]            the centred window, offsets rounded as torchvision does
  crop: {top, left, height, width}   a fixed window (aligned-face crops)
  resize: S | [H, W] | {size, antialias}   bilinear, align_corners False, antialias off by default
  to_unit_range: true                x -> (x + 1) / 2
  normalize: {mean: [3], std: [3]}   (x - mean) / std on [0, 1] images
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddcs_core.errors import DDCSInputError

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

# Named pipelines for the common cases; each is documented in the README's "Bring your own world".
PRESETS: dict[str, list[dict]] = {
    "none": [],
    "unit": [{"to_unit_range": True}],
    "imagenet": [{"to_unit_range": True}, {"normalize": IMAGENET}],
    "imagenet-224": [{"resize": 224}, {"to_unit_range": True}, {"normalize": IMAGENET}],
    "paper-faces-112": [{"center_crop": 200}, {"resize": 112}, {"to_unit_range": True}, {"normalize": HALF}],
    "paper-faces-224": [{"center_crop": 200}, {"resize": 224}, {"to_unit_range": True}, {"normalize": HALF}],
    "stanford-dogs-224": [{"center_crop": 256}, {"resize": 224}, {"to_unit_range": True}, {"normalize": IMAGENET}],
}


def _size(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise DDCSInputError(f"{where}: expected a size (int or [height, width]), got {value!r}")
    if isinstance(value, int):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise DDCSInputError(f"{where}: expected a positive int or [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def _check_fits(hw: tuple[int, int], window: tuple[int, int], where: str) -> None:
    if window[0] > hw[0] or window[1] > hw[1]:
        raise DDCSInputError(f"{where}: window {window[0]}x{window[1]} does not fit a {hw[0]}x{hw[1]} image")


class CenterCrop(nn.Module):
    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        _check_fits(hw, self.size, "center_crop")
        return self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        self.out_size((h, w))
        top, left = int(round((h - self.size[0]) / 2.0)), int(round((w - self.size[1]) / 2.0))
        return x[..., top:top + self.size[0], left:left + self.size[1]]

    def describe(self) -> dict:
        return {"center_crop": list(self.size)}


class Crop(nn.Module):
    def __init__(self, top: int, left: int, size: tuple[int, int]):
        super().__init__()
        self.top, self.left, self.size = top, left, size

    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        _check_fits(hw, (self.top + self.size[0], self.left + self.size[1]), "crop (top+height, left+width)")
        return self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.out_size(tuple(x.shape[-2:]))
        return x[..., self.top:self.top + self.size[0], self.left:self.left + self.size[1]]

    def describe(self) -> dict:
        return {"crop": {"top": self.top, "left": self.left, "height": self.size[0], "width": self.size[1]}}


class Resize(nn.Module):
    def __init__(self, size: tuple[int, int], antialias: bool = False):
        super().__init__()
        self.size, self.antialias = size, antialias

    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        return self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias)

    def describe(self) -> dict:
        return {"resize": {"size": list(self.size), "antialias": self.antialias}}


class ToUnitRange(nn.Module):
    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        return hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) * 0.5

    def describe(self) -> dict:
        return {"to_unit_range": True}


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        return hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def describe(self) -> dict:
        return {"normalize": {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}}


def _triple(value: Any, where: str, positive: bool) -> list[float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DDCSInputError(f"{where}: expected 3 numbers (R, G, B), got {value!r}")
    if positive and min(value) <= 0:
        raise DDCSInputError(f"{where}: std values must be > 0, got {value!r}")
    return [float(v) for v in value]


def _step(raw: Any, where: str, unit: bool) -> nn.Module:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise DDCSInputError(f"{where}: each step is a mapping with one key, got {raw!r}")
    (kind, value), = raw.items()
    if kind == "center_crop":
        return CenterCrop(_size(value, f"{where}.center_crop"))
    if kind == "crop":
        keys = {"top", "left", "height", "width"}
        if not isinstance(value, dict) or set(value) != keys:
            raise DDCSInputError(f"{where}.crop: expected the keys {sorted(keys)}, got {value!r}")
        top, left = value["top"], value["left"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (top, left)):
            raise DDCSInputError(f"{where}.crop: top and left must be ints >= 0, got {top!r}, {left!r}")
        return Crop(top, left, _size([value["height"], value["width"]], f"{where}.crop"))
    if kind == "resize":
        antialias = False
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"size", "antialias"})
            if unknown or "size" not in value:
                raise DDCSInputError(f"{where}.resize: expected keys size (and antialias), got {sorted(value)}")
            antialias = value.get("antialias", False)
            if not isinstance(antialias, bool):
                raise DDCSInputError(f"{where}.resize.antialias must be true or false, got {antialias!r}")
            value = value["size"]
        return Resize(_size(value, f"{where}.resize"), antialias)
    if kind == "to_unit_range":
        if value is not True:
            raise DDCSInputError(f"{where}.to_unit_range: write `to_unit_range: true` (got {value!r})")
        if unit:
            raise DDCSInputError(f"{where}: to_unit_range appears twice")
        return ToUnitRange()
    if kind == "normalize":
        if not isinstance(value, dict) or set(value) != {"mean", "std"}:
            raise DDCSInputError(f"{where}.normalize: expected keys mean and std, got {value!r}")
        if not unit:
            raise DDCSInputError(f"{where}.normalize: mean/std apply to [0, 1] images; put `to_unit_range: true` "
                                 f"before it (inputs arrive in the generator's [-1, 1])")
        return Normalize(_triple(value["mean"], f"{where}.normalize.mean", False),
                         _triple(value["std"], f"{where}.normalize.std", True))
    raise DDCSInputError(f"{where}: unknown step {kind!r} (known: center_crop, crop, resize, to_unit_range, normalize)")


class Preprocess(nn.Module):
    """The declared steps as one module: generator images [-1, 1] NCHW -> the classifier's input."""

    def __init__(self, steps: Sequence[nn.Module], source: str):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        for step in self.steps:
            x = step(x)
        return x

    def out_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The classifier's input size for generator images of size `hw`; refuses windows that do not fit."""
        for i, step in enumerate(self.steps):
            try:
                hw = step.out_size(hw)
            except DDCSInputError as e:
                raise DDCSInputError(f"preprocess step {i} ({self.source}): {e}") from None
        return hw

    def describe(self) -> list[dict]:
        return [s.describe() for s in self.steps]


def build_preprocess(declared: str | Sequence[dict], where: str = "preprocess") -> Preprocess:
    """A `Preprocess` from a preset name or a list of step mappings; refuses unknown or misordered steps."""
    if isinstance(declared, str):
        if declared not in PRESETS:
            raise DDCSInputError(f"{where}: unknown preset {declared!r} (known: {sorted(PRESETS)})")
        steps, source = PRESETS[declared], f"preset {declared}"
    elif isinstance(declared, (list, tuple)):
        steps, source = list(declared), "declared steps"
    else:
        raise DDCSInputError(f"{where}: expected a preset name or a list of steps, got {type(declared).__name__}")
    modules: list[nn.Module] = []
    for i, raw in enumerate(steps):
        modules.append(_step(raw, f"{where}[{i}]", any(isinstance(m, ToUnitRange) for m in modules)))
    return Preprocess(modules, source)
