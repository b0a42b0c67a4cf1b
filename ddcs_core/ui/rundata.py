"""A run's arrays as the views read them: loaded once, reloaded when a file of the run changes.

Paging a gallery of 10,000 targets must not reread npz files or resort anything, so each run's
targets, reconstructions, evaluations, orderings and thumbnails are kept here, keyed by the
modification stamps of the files they came from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.metrics.ddcs import hardest_first
from ddcs_core.runs import PoolEvaluation, Run, RunStore
from ddcs_core.ui.thumbs import png_data_uri

THUMB_CACHE = 4096


def ranks_of(order: np.ndarray) -> np.ndarray:
    """1-based rank of every target given the hardest-first order."""
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


class RunData:
    """Read-only, cached view of one run for the UI."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.stamp = file_stamp(run)
        self._lock = threading.RLock()
        self._targets: ImageSet | None = None
        self._recon: dict[str, ImageSet] = {}
        self._eval: dict[str, PoolEvaluation] = {}
        self._order: dict[str, np.ndarray] = {}
        self._ranks: dict[str, np.ndarray] = {}
        self._map: dict | None = None
        self._map_loaded = False
        self._thumbs: OrderedDict[tuple, str] = OrderedDict()
        self.pools = run.pools()
        self.evaluated = [p for p in self.pools if run.has_evaluation(p)]

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def targets(self) -> ImageSet:
        with self._lock:
            if self._targets is None:
                self._targets = self.run.targets()
            return self._targets

    def recon(self, pool: str) -> ImageSet:
        with self._lock:
            if pool not in self._recon:
                self._recon[pool] = self.run.recon(self._known(pool))[0]
            return self._recon[pool]

    def evaluation(self, pool: str) -> PoolEvaluation:
        with self._lock:
            if pool not in self._eval:
                if pool not in self.evaluated:
                    raise DDCSInputError(f"pool {pool!r} of run {self.name} has not been evaluated yet")
                ev = self.run.evaluation(pool)
                n = len(self.targets)
                if len(ev.arrays["d_tar"]) != n:
                    raise DDCSInputError(f"{self.run.pool_dir(pool)}: the evaluation covers {len(ev.arrays['d_tar'])} "
                                         f"targets but the run has {n}; evaluate the pool again")
                self._eval[pool] = ev
            return self._eval[pool]

    def order(self, pool: str) -> np.ndarray:
        with self._lock:
            if pool not in self._order:
                a = self.evaluation(pool).arrays
                self._order[pool] = hardest_first(a["d_tar"], a["matched"].astype(bool))
                self._ranks[pool] = ranks_of(self._order[pool])
            return self._order[pool]

    def ranks(self, pool: str) -> np.ndarray:
        self.order(pool)
        return self._ranks[pool]

    def nearest_recon(self, pool: str, target: int) -> int:
        """Index in the pool's recon.npz of the target's nearest assigned reconstruction, -1 if none."""
        a = self.evaluation(pool).arrays
        j = int(a["nearest"][target])
        if j >= 0 and len(a["recon_assigned"]) != len(self.recon(pool)):
            raise DDCSInputError(f"{self.run.pool_dir(pool)}: the evaluation covers {len(a['recon_assigned'])} "
                                 f"reconstructions but recon.npz holds {len(self.recon(pool))}; evaluate the pool again")
        return j

    def map(self) -> dict | None:
        with self._lock:
            if not self._map_loaded:
                self._map = self.run.map()
                self._map_loaded = True
            return self._map

    def thumb(self, kind: str, index: int, pool: str | None = None, max_side: int = 96, lossless: bool = True) -> str:
        """Data URI of target `index` (kind 'target') or of reconstruction `index` of `pool` (kind 'recon')."""
        key = (kind, pool, int(index), max_side, lossless)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        images = self.targets.images if kind == "target" else self.recon(str(pool)).images
        if not 0 <= int(index) < len(images):
            raise DDCSInputError(f"{kind} index {index} is out of range (0..{len(images) - 1})")
        uri = png_data_uri(images[int(index)], max_side, lossless)
        with self._lock:
            self._thumbs[key] = uri
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return uri

    def _known(self, pool: str) -> str:
        if pool not in self.pools:
            raise DDCSInputError(f"run {self.name} has no pool {pool!r} (pools: {', '.join(self.pools) or 'none'})")
        return pool


def file_stamp(run: Run) -> tuple:
    """Modification stamps of every file the views read; any change means reload."""
    names = [run.path / "config.json", run.path / "targets.npz", run.path / "map.npz"]
    pools = run.path / "pools"
    if pools.is_dir():
        for folder in sorted(pools.iterdir()):
            names += [folder / "recon.npz", folder / "evaluation.npz", folder / "report.json"]
    return tuple(_stat(p) for p in names)


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size)


class RunCache:
    """RunData per run of a store, replaced when the run's files change."""

    def __init__(self, store: RunStore, keep: int = 4) -> None:
        self.store = store
        self.keep = keep
        self._data: OrderedDict[str, RunData] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return [r.name for r in self.store.runs()]

    def get(self, name: str) -> RunData:
        run = self.store.run(name)
        if not run.exists():
            raise DDCSInputError(f"{run.path}: no such run in the store {self.store.root}")
        stamp = file_stamp(run)
        with self._lock:
            data = self._data.get(name)
            if data is None or data.stamp != stamp:
                data = RunData(run)
                self._data[name] = data
            self._data.move_to_end(name)
            while len(self._data) > self.keep:
                self._data.popitem(last=False)
            return data
