"""Feature extractors for FID and PRDC, each with the name the report prints.

Inception-v3 is the field's convention but its weights come from a model hub; it is used only when
the file is on disk (`--inception-weights`, or torchvision's own cache). Otherwise the report says
plainly which extractor was used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddcs_core.data.transforms import to_tensor
from ddcs_core.errors import DDCSInputError

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_NAME = "torchvision-inception-v3-imagenet-pool3-2048"


def find_inception_weights(explicit: str | Path | None = None) -> Path | None:
    """The torchvision Inception-v3 ImageNet weights if present locally (never downloads)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DDCSInputError(f"--inception-weights {path}: file not found")
        return path
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    candidate = torch_home / "hub" / "checkpoints" / INCEPTION_FILE
    return candidate if candidate.is_file() else None


class InceptionFeatures:
    """Pool3 (2048-d) features of torchvision's ImageNet Inception-v3, inputs resized to 299x299."""

    name = INCEPTION_NAME

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 64) -> None:
        from torchvision.models import inception_v3

        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # any unreadable or mismatched file is a user input problem
            raise DDCSInputError(f"--inception-weights {weights}: not torchvision Inception-v3 ImageNet weights ({exc})") from exc
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        for i in range(0, len(images), self.batch_size):
            x = to_tensor(images[i:i + self.batch_size]).to(self.device)
            x = F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.model((x - mean) / std).float().cpu().numpy())
        return np.concatenate(out)


@torch.no_grad()
def classifier_outputs(model: torch.nn.Module, images: np.ndarray, device: torch.device,
                       batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) of a classifier with the engine's `features`/`forward` API."""
    logits, feats = [], []
    head = _head(model)
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i:i + batch_size]).to(device)
        f = model.features(x)
        feats.append(f.float().cpu().numpy())
        logits.append((head(f) if head is not None else model(x)).float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def _head(model: torch.nn.Module):
    head = getattr(model, "head", None)
    return head if callable(head) else None
