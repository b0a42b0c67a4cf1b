"""Feature extractors for FID and PRDC, each with the name the report prints.

Inception-v3 is the field's convention but its weights come from a model hub; it is used only when
the file is on disk (`--inception-weights`, or the torch hub cache). Two files are accepted and told
apart by their contents: pytorch-fid's FID Inception (`pt_inception-2015-12-05-*.pth`, the TensorFlow
FID network that FID numbers in papers, and the official DDCS code, use) and torchvision's ImageNet
Inception-v3. Otherwise the report says plainly which extractor was used instead.
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
FID_INCEPTION_GLOB = "pt_inception-2015-12-05-*.pth"
INCEPTION_NAME = "inception-v3-torchvision-pool3"
FID_INCEPTION_NAME = "inception-v3-fid-pool3"


def find_inception_weights(explicit: str | Path | None = None) -> Path | None:
    """Inception-v3 weights if present locally, pytorch-fid's FID file first (never downloads)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DDCSInputError(f"--inception-weights {path}: file not found")
        return path
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    folder = torch_home / "hub" / "checkpoints"
    found = sorted(folder.glob(FID_INCEPTION_GLOB)) if folder.is_dir() else []
    if found:
        return found[0]
    candidate = folder / INCEPTION_FILE
    return candidate if candidate.is_file() else None


def _read_state(weights: Path) -> dict:
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user input problem
        raise DDCSInputError(f"--inception-weights {weights}: cannot read it as a PyTorch state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DDCSInputError(f"--inception-weights {weights}: not a state dict of tensors")
    return state


def is_fid_inception(state: dict) -> bool:
    """pytorch-fid's FID Inception has a 1008-way classifier and no auxiliary head."""
    fc = state.get("fc.weight")
    return fc is not None and tuple(fc.shape) == (1008, 2048) and not any(k.startswith("AuxLogits.") for k in state)


def inception_features(weights: Path, device: torch.device, official: bool = False):
    """The extractor the file holds: FIDInceptionFeatures or the torchvision InceptionFeatures."""
    state = _read_state(weights)
    if is_fid_inception(state):
        return FIDInceptionFeatures(weights, device, pre_resize=official, state=state)
    return InceptionFeatures(weights, device, state=state)


class InceptionFeatures:
    """Pool3 (2048-d) features of torchvision's ImageNet Inception-v3, inputs resized to 299x299."""

    name = INCEPTION_NAME

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 64, state: dict | None = None) -> None:
        from torchvision.models import inception_v3

        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            model.load_state_dict(_read_state(weights) if state is None else state)
        except RuntimeError as exc:  # a mismatched file is a user input problem
            raise DDCSInputError(f"--inception-weights {weights}: neither pytorch-fid's FID Inception "
                                 f"(pt_inception-2015-12-05-*.pth) nor torchvision's Inception-v3 weights ({exc})") from exc
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


def fid_inception_v3() -> torch.nn.Module:
    """pytorch-fid's FID Inception architecture with untrained weights (its blocks, no download)."""
    from pytorch_fid import inception as pf
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


class FIDInceptionFeatures:
    """Pool3 (2048-d) of pytorch-fid's FID Inception, loaded from the user's file.

    Input as pytorch-fid with ``normalize_input=False`` takes it: float [-1, 1], bilinearly resized
    to 299x299. `pre_resize` adds the official DDCS code's ``transforms.Resize(256)`` before that.
    """

    name = FID_INCEPTION_NAME

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 64, pre_resize: bool = False,
                 state: dict | None = None) -> None:
        model = fid_inception_v3()
        try:
            model.load_state_dict(_read_state(weights) if state is None else state)
        except RuntimeError as exc:
            raise DDCSInputError(f"--inception-weights {weights}: not pytorch-fid's FID Inception weights ({exc})") from exc
        model.fc = torch.nn.Identity()
        model.dropout = torch.nn.Identity()
        self.model = model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.pre_resize = pre_resize

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        from ddcs_core.data.official_prep import inception_input

        out = []
        for i in range(0, len(images), self.batch_size):
            x = to_tensor(images[i:i + self.batch_size]).to(self.device)
            if self.pre_resize:
                x = inception_input(x)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.model(x).float().cpu().numpy())
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
