"""The run store: one folder per run, readable without the app (DESIGN.md §3).

    <store>/<run>/config.json                 everything needed to re-run, seeds included
    <store>/<run>/targets.npz                 the private targets (images, labels, class_names, paths)
    <store>/<run>/pools/<pool>/recon.npz      reconstructions: images, labels, latents (may be empty), class_names
    <store>/<run>/pools/<pool>/report.json    evaluation of the pool (evaluate.write_evaluation output,
    <store>/<run>/pools/<pool>/targets.csv      with evaluation.npz holding the per-target arrays)
    <store>/<run>/map.npz                     UMAP coordinates of targets and every pool's reconstructions
    <store>/<run>/grids/...                   fixed-latent sample grids (PNG)

Every file is written atomically, so a killed run leaves each file either complete or absent; a pool's
report.json, targets.csv and evaluation.npz are links into one set folder, switched as a whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddcs_core import atomic
from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError

# The evaluation's files are one atomic set (atomic.write_set): <pool>/.evaluation -> .evaluation-<id>/
EVALUATION_SET = "evaluation"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str, what: str = "run") -> str:
    """Run and pool names become folder names: letters, digits, '.', '_', '-' only."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise DDCSInputError(f"{what} name {name!r} is not allowed: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


@dataclass
class PoolEvaluation:
    """A pool's evaluation as stored: the report and the per-target arrays."""

    report: dict
    arrays: dict[str, np.ndarray]


class Run:
    """One run folder. Reading never needs the app; writing is atomic file by file.

    Reading: `config`, `targets()`, `pools()`, `recon(pool)` (images and latents), `evaluation(pool)`
    (the stored report and per-target arrays), `map()`. Writing: `write_config`, `write_targets`,
    `write_recon`, `write_evaluation`, `write_map`. The layout is in the module docstring.

    Args:
        path: the run folder (it need not exist yet; `exists()` tells).

    Raises:
        DDCSInputError: from the readers, when the run or pool is missing or not yet evaluated,
            and from the writers, for a pool name that cannot be a folder name.

    Example:
        >>> run = RunStore("runs").run("demo")
        >>> run.evaluation(run.pools()[0]).report["ddcs"]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def exists(self) -> bool:
        return (self.path / "config.json").is_file()

    def safe_path(self, relative: str | Path) -> Path:
        """A path inside the run; anything resolving outside it is refused (the app serves only these)."""
        full = (self.path / relative).resolve()
        if not full.is_relative_to(self.path.resolve()):
            raise DDCSInputError(f"{relative}: outside the run folder {self.path}")
        return full

    # config ---------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        path = self.path / "config.json"
        if not path.is_file():
            raise DDCSInputError(f"{self.path}: not a run (no config.json)")
        return json.loads(path.read_text())

    def write_config(self, config: dict) -> None:
        atomic.write_json(self.path / "config.json", config)

    # targets ---------------------------------------------------------------------------------
    def write_targets(self, targets: ImageSet) -> None:
        atomic.write_npz(self.path / "targets.npz", images=targets.images, labels=targets.labels,
                         class_names=np.array(targets.class_names), paths=np.array(targets.paths),
                         source=np.array(targets.source))

    def targets(self) -> ImageSet:
        with _npz(self.path / "targets.npz") as z:
            return ImageSet(z["images"], z["labels"].astype(np.int64), [str(c) for c in z["class_names"]],
                            [str(p) for p in z["paths"]], str(z["source"]))

    # pools -------------------------------------------------------------------------------------
    def pools(self) -> list[str]:
        folder = self.path / "pools"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "recon.npz").is_file())

    def pool_dir(self, pool: str) -> Path:
        return self.path / "pools" / check_name(pool, "pool")

    def write_recon(self, pool: str, recon: ImageSet, latents: np.ndarray | None = None) -> None:
        lat = np.zeros((len(recon), 0), np.float32) if latents is None else np.asarray(latents, np.float32)
        if len(lat) != len(recon):
            raise DDCSInputError(f"pool {pool}: {len(lat)} latents for {len(recon)} reconstructions")
        atomic.write_npz(self.pool_dir(pool) / "recon.npz", images=recon.images, labels=recon.labels,
                         latents=lat, class_names=np.array(recon.class_names), paths=np.array(recon.paths),
                         source=np.array(recon.source))

    def recon(self, pool: str) -> tuple[ImageSet, np.ndarray]:
        with _npz(self.pool_dir(pool) / "recon.npz") as z:
            images = ImageSet(z["images"], z["labels"].astype(np.int64), [str(c) for c in z["class_names"]],
                              [str(p) for p in z["paths"]], str(z["source"]))
            return images, z["latents"]

    def has_evaluation(self, pool: str) -> bool:
        return (self.pool_dir(pool) / "report.json").is_file() and (self.pool_dir(pool) / "evaluation.npz").is_file()

    def evaluation(self, pool: str) -> PoolEvaluation:
        folder = self.pool_dir(pool)
        if not self.has_evaluation(pool):
            raise DDCSInputError(f"{folder}: pool {pool!r} has not been evaluated yet")
        base = atomic.current_set(folder, EVALUATION_SET) or folder  # every file from one set
        try:
            return _read_evaluation(base)
        except (DDCSInputError, FileNotFoundError):
            if base == folder:
                raise
        return _read_evaluation(atomic.current_set(folder, EVALUATION_SET) or folder)  # switched while we read

    def write_evaluation(self, pool: str, evaluation) -> None:
        """Store an `evaluate.Evaluation` of this pool (report.json, targets.csv, evaluation.npz)."""
        from ddcs_core.evaluate import write_evaluation

        write_evaluation(self.pool_dir(pool), evaluation)

    # map ---------------------------------------------------------------------------------------
    def write_map(self, **arrays: np.ndarray) -> None:
        atomic.write_npz(self.path / "map.npz", **arrays)

    def map(self) -> dict[str, np.ndarray] | None:
        path = self.path / "map.npz"
        if not path.is_file():
            return None
        with _npz(path) as z:
            return {k: z[k] for k in z.files}


class RunStore:
    """A folder of runs, one subfolder each (`make run` and `ddcs run` use ./runs).

    Args:
        root: the store's folder (created by the first run written into it).

    Raises:
        DDCSInputError: from `run` and `create`, for a name that is not a plain folder name, and from
            `create`, when a run of that name exists with a different config.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def runs(self) -> list[Run]:
        if not self.root.is_dir():
            return []
        return sorted((Run(p) for p in self.root.iterdir() if p.is_dir() and (p / "config.json").is_file()),
                      key=lambda r: r.name)

    def run(self, name: str) -> Run:
        return Run(self.root / check_name(name))

    def create(self, name: str, config: dict, targets: ImageSet,
               same: Callable[[dict, dict], bool] | None = None) -> Run:
        """A new run (or the existing one with the same name, for resuming) with its config and targets.
        `same(stored, config)` decides whether an existing run's config is this one (default: equal);
        an existing run keeps its config.json as written."""
        run = self.run(name)
        if run.exists():
            stored = run.config
            if not (same(stored, config) if same is not None else stored == config):
                raise DDCSInputError(f"run {run.path} exists with a different config; pick another name or delete it")
        else:
            run.write_config(config)
        if not (run.path / "targets.npz").is_file():
            run.write_targets(targets)
        return run


def _read_evaluation(folder: Path) -> PoolEvaluation:
    with _npz(folder / "evaluation.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return PoolEvaluation(json.loads((folder / "report.json").read_text()), arrays)


class _npz:
    """np.load with a clear error naming the file, closed after use (no pickles: allow_pickle=False)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        if not self.path.is_file():
            raise DDCSInputError(f"{self.path}: missing from the run")
        try:
            self.z = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DDCSInputError(f"{self.path}: unreadable ({exc})") from exc
        return self.z

    def __exit__(self, *exc) -> None:
        self.z.close()
