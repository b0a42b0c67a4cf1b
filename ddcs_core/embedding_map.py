"""The Map's 2-D coordinates: LPIPS embeddings of targets and every pool's reconstructions → PCA → UMAP.

Computed once per run and stored in `<run>/map.npz` with the fingerprints of the files it covered, so
the app only recomputes it when a pool was added, removed or rewritten. Embeddings are taken at the
stored (native) image size, where LPIPS vectors stay small enough to project; PCA is fitted on a
sample whose size respects a memory cap and then applied chunk by chunk, so a large run never holds
all raw embeddings at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np

from ddcs_core.choices import MAP_METHODS
from ddcs_core.control import Cancelled, Report, ShouldStop
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import sha256_file
from ddcs_core.runs import Run


MAP_VERSION = 1


MapCancelled = Cancelled  # raised inside `compute_map` when the caller asked to stop; nothing is written

def run_fingerprints(run: Run) -> dict[str, str]:
    """What a map depends on: the sha256 of the targets file and of each pool's reconstructions file (by
    content, so a rewritten pool with identical content keeps its map)."""
    out = {"<targets>": sha256_file(run.path / "targets.npz")}
    for pool in run.pools():
        out[pool] = sha256_file(run.pool_dir(pool) / "recon.npz")
    return out


def stored_fingerprints(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    names = ["<targets>", *(str(p) for p in arrays.get("pools", []))]
    prints = [str(arrays.get("targets_fingerprint", "")), *(str(f) for f in arrays.get("fingerprints", []))]
    return dict(zip(names, prints))


def map_is_current(run: Run, arrays: dict[str, np.ndarray] | None = None) -> bool:
    """True when map.npz exists and covers exactly the run's current targets and pools."""
    arrays = run.map() if arrays is None else arrays
    if arrays is None or int(arrays.get("version", 0)) != MAP_VERSION:
        return False
    return stored_fingerprints(arrays) == run_fingerprints(run)


def run_net(run: Run) -> str:
    """The LPIPS backbone the run was evaluated with (first evaluated pool), else its config's, else alex."""
    for pool in run.pools():
        if run.has_evaluation(pool):
            net = run.evaluation(pool).report.get("profile", {}).get("net")
            if net:
                return str(net)
    return str(run.config.get("net") or "alex")


def ensure_map(run: Run, device: str = "auto", report: Report | None = None,
               cancelled: ShouldStop | None = None, **options) -> dict[str, np.ndarray]:
    """The run's stored map, recomputed first if its pools changed since it was made."""
    arrays = run.map()
    if arrays is not None and map_is_current(run, arrays):
        return arrays
    return compute_map(run, device=device, report=report, cancelled=cancelled, **options)


def compute_map(run: Run, *, net: str | None = None, device: str = "auto", report: Report | None = None,
                cancelled: ShouldStop | None = None, pca_dims: int = 50, n_neighbors: int = 15,
                min_dist: float = 0.1, n_epochs: int | None = None, memory_cap_gb: float = 1.0,
                max_fit_rows: int = 4000, seed: int = 0, method: str = "umap") -> dict[str, np.ndarray]:
    """Compute and store map.npz for every pool of the run; returns the stored arrays.

    method "umap" is the Map proper; "pca" (the first two principal components) is a quick look that
    needs no neighbour graph.
    """
    from ddcs_core.perceptual import PerceptualDistance

    if method not in MAP_METHODS:
        raise DDCSInputError(f"map method must be umap or pca, got {method!r}")

    say = report or (lambda fraction, message: None)
    stop = cancelled or (lambda: False)
    prints = run_fingerprints(run)
    targets = run.targets()
    pools = run.pools()
    recons = {}
    for pool in pools:
        recon, _ = run.recon(pool)
        if len(recon) and recon.size != targets.size:
            raise DDCSInputError(f"{run.pool_dir(pool) / 'recon.npz'}: reconstructions are {recon.size[0]}x{recon.size[1]} "
                                 f"but the targets are {targets.size[0]}x{targets.size[1]}; the map needs one size")
        recons[pool] = recon.images
    net = net or run_net(run)
    metric = PerceptualDistance(net, device=device, memory_cap_gb=memory_cap_gb, cache_cap_gb=2 * memory_cap_gb)
    sets = [targets.images, *recons.values()]
    total = sum(len(s) for s in sets)
    dim = metric.embedding_dim(*targets.size)
    cap = int(memory_cap_gb * 2**30)
    chunk = int(max(1, min(512, cap // 4 // (dim * 4))))

    say(0.02, f"embedding {len(targets)} targets with LPIPS-{net}")
    target_emb = metric.embed_cached(targets.images)
    sources: list[Callable[[np.ndarray], np.ndarray]] = [
        (lambda idx: np.asarray(target_emb.emb[idx])) if target_emb is not None
        else (lambda idx: metric.embed(targets.images, idx).emb),
        *[(lambda idx, imgs=imgs: metric.embed(imgs, idx).emb) for imgs in recons.values()],
    ]

    rng = np.random.default_rng(seed)
    fit_rows = int(min(total, max_fit_rows, max(2, cap // 2 // (dim * 4))))
    offsets = np.cumsum([0] + [len(s) for s in sets])
    sample = np.sort(rng.choice(total, size=fit_rows, replace=False))
    say(0.15, f"fitting PCA on {fit_rows} of {total} embeddings ({dim} dims)")
    picks = [sample[(sample >= offsets[k]) & (sample < offsets[k + 1])] - offsets[k] for k in range(len(sets))]
    fit = np.concatenate([sources[k](idx) for k, idx in enumerate(picks) if len(idx)])
    if stop():
        raise Cancelled("map cancelled; rerun to compute it")
    from sklearn.decomposition import PCA

    n_comp = int(max(2, min(pca_dims, fit.shape[0] - 1, fit.shape[1])))
    pca = PCA(n_components=n_comp, random_state=seed).fit(fit)
    del fit

    reduced = np.empty((total, n_comp), np.float32)
    done = 0
    for k, (images, source) in enumerate(zip(sets, sources)):
        for idx in _chunks(len(images), chunk):
            if stop():
                raise Cancelled("map cancelled; rerun to compute it")
            reduced[offsets[k] + idx] = pca.transform(source(idx)).astype(np.float32)
            done += len(idx)
            say(0.15 + 0.55 * done / total, f"projected {done}/{total} embeddings")

    say(0.72, f"{method.upper()} of {total} points")
    xy, method = _project_2d(reduced, n_neighbors, min_dist, n_epochs, seed, method)
    if stop():
        raise Cancelled("map cancelled; rerun to compute it")
    xy = xy.astype(np.float32)
    pool_of = np.concatenate([np.full(len(recons[p]), i, np.int32) for i, p in enumerate(pools)]) \
        if pools else np.zeros(0, np.int32)
    index_in_pool = np.concatenate([np.arange(len(recons[p]), dtype=np.int64) for p in pools]) \
        if pools else np.zeros(0, np.int64)
    arrays = {
        "version": np.array(MAP_VERSION),
        "target_xy": xy[:len(targets)],
        "recon_xy": xy[len(targets):].reshape(-1, 2),
        "recon_pool": pool_of,
        "recon_index": index_in_pool,
        "pools": np.array(pools, dtype=str),
        "fingerprints": np.array([prints[p] for p in pools], dtype=str),
        "targets_fingerprint": np.array(prints["<targets>"]),
        "net": np.array(net),
        "method": np.array(method),
        "params": np.array(json.dumps({"pca_dims": n_comp, "pca_fit_rows": fit_rows, "n_neighbors": n_neighbors,
                                       "min_dist": min_dist, "n_epochs": n_epochs, "seed": seed,
                                       "image_size": list(targets.size)})),
    }
    run.write_map(**arrays)
    say(1.0, f"map stored ({method}, {total} points)")
    return arrays


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def _project_2d(x: np.ndarray, n_neighbors: int, min_dist: float, n_epochs: int | None,
                seed: int, method: str) -> tuple[np.ndarray, str]:
    """UMAP to 2-D; a handful of points cannot support a neighbour graph, so they keep their first two PCs."""
    n = len(x)
    if method == "pca" or n < 8:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))), "pca"
    try:
        import umap
    except ImportError as exc:
        raise DDCSInputError("the Map needs umap-learn: pip install 'ddcs-explorer[app]' (the pca method "
                             "works without it)") from exc

    reducer = umap.UMAP(n_components=2, n_neighbors=int(min(n_neighbors, n - 1)), min_dist=min_dist,
                        n_epochs=n_epochs, random_state=seed, n_jobs=1, init="spectral" if n > 100 else "random")
    return reducer.fit_transform(x), "umap"
