"""Short content digests, so saved state is only resumed against the same models and data."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def module_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's state: names and float32 values of every tensor."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
    """sha256 (16 hex) of an array's shape, dtype and bytes."""
    h = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]
