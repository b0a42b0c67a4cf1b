"""Digests of files, arrays and module states, in one home.

They are stored (world and shipped-run manifests, resume signatures, the map's fingerprints, embedding-cache
keys) and later compared with what is computed anew, so no function here may change its output. The array
digests feed, per array, a short text head made of its dtype and shape, then its C-order bytes. Their heads
differ for historical reasons, and each is stored somewhere, so each layout keeps its own name below: pick the
one of the signature you extend, never a new one for an old signature.

Torch-free and numpy-only, so it costs nothing to import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CHUNK = 1 << 20

HEAD_DTYPE_SHAPE = "{dtype}{shape}"  # embedding-cache keys (perceptual.pairwise)
HEAD_SHAPE_DTYPE = "{shape}{dtype}"  # `array_digest`: transfer resume signatures, custom-world provenance
HEAD_TUPLE = "({dtype!r}, {shape!r})"  # classifier-training resume signature
HEAD_SHAPE = "{shape}"  # GAN-training resume signature, the shipped run's image digests


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (equal to `sha256_bytes` of its content)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def update_with_arrays(h: Any, arrays: tuple[np.ndarray, ...], head: str) -> None:
    """Feed each array to the hashlib object `h`: `head` formatted with its dtype and shape, then its bytes."""
    for a in arrays:
        h.update(head.format(dtype=a.dtype, shape=a.shape).encode())
        h.update(np.ascontiguousarray(a).data)


def arrays_sha256(*arrays: np.ndarray, head: str) -> str:
    """Hex sha256 of `arrays` in the layout `head` (one of the HEAD_* constants)."""
    h = hashlib.sha256()
    update_with_arrays(h, arrays, head)
    return h.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """Short sha256 (16 hex) of an array's shape, dtype and bytes, for resume signatures and provenance."""
    return arrays_sha256(array, head=HEAD_SHAPE_DTYPE)[:16]


def module_digest(module: torch.nn.Module) -> str:
    """Short sha256 (16 hex) of a module's state: names and float32 values of every tensor, by name."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def row_digests(array: np.ndarray) -> np.ndarray:
    """A 64-bit blake2b digest (int64) of each row `array[i]`'s bytes: equal rows, equal digests."""
    return np.array([int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "little", signed=True)
                     for x in np.asarray(array)], dtype=np.int64)
