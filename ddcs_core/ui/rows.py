"""What each view shows, as plain records computed from a run: summary numbers, gallery pages,
target details, per-pool metrics, pool differences and the exposure ranking.

No gradio here: every function takes a RunData and returns data, so the views are tested without a
browser and the Gradio layer only turns these records into HTML.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

import numpy as np

from ddcs_core import atomic
from ddcs_core.errors import DDCSInputError
from ddcs_core.ui import fmt
from ddcs_core.ui.rundata import RunData

ALL_CLASSES = "All classes"
STATUSES = ("All", "Unmatched", "Matched")
ALL_POOLS = "All pools (closest of any)"
GRID_ORDER = ("pretrained", "vanilla", "entropy", "ngd")
GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# summary ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    note: str = ""


def summary(report: dict) -> list[Stat]:
    """The headline numbers of one pool's report.json, formatted."""
    counts = report.get("counts", {})
    n_targets = counts.get("targets", 0)
    prdc = report.get("prdc") or {}
    acc = report.get("attack_accuracy") or {}
    fid = report.get("fid") or {}
    return [
        Stat("DDCS", fmt.num(report.get("ddcs")), "mean of 1 / d_tar over all targets"),
        Stat("DDCS avg", fmt.num(report.get("ddcs_avg")), "with the mean distance of assigned reconstructions"),
        Stat("Matched", fmt.pct(report.get("matched_fraction")),
             f"{fmt.count(report.get('matched', 0))} of {fmt.count(n_targets)} targets reached"),
        Stat("Coverage", fmt.pct(prdc.get("coverage")), f"k = {prdc.get('k', '—')}, per class, averaged"),
        Stat("Attack accuracy", fmt.pct(acc.get("top1")) if acc else "—",
             f"top-5 {fmt.pct(acc.get('top5'))}" if acc else "no evaluation model given"),
        Stat("FID", fmt.num(fid.get("value"), 4), f"features: {fid.get('features', '—')}"),
    ]


def profile_line(report: dict) -> str:
    """One line saying how the numbers were obtained (the profile is always shown with them)."""
    p = report.get("profile", {})
    counts = report.get("counts", {})
    size = f"{p.get('size')}×{p.get('size')}" if p.get("size") else "native size"
    return (f"{p.get('name', '?')} profile · LPIPS-{p.get('net', '?')} at {size} · {p.get('assignment', '?')} · "
            f"{fmt.count(counts.get('reconstructions', 0))} reconstructions, "
            f"{fmt.count(counts.get('targets', 0))} targets, {counts.get('target_classes', '?')} classes")


# gallery ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    target: int
    rank: int
    label: str
    d_tar: float
    contribution: float
    matched: bool
    exact_copy: bool
    recon: int
    target_src: str
    recon_src: str
    closest: Closest | None = None


@dataclass(frozen=True)
class Closest:
    """An unmatched target's nearest reconstruction of its class, which DDCS assigned to another target."""

    recon: int
    d: float  # LPIPS distance to this (unmatched) target
    assigned_to: int  # the target it was assigned to
    assigned_rank: int  # that target's rank, hardest first (the number its card shows)
    assigned_d: float  # its distance to that target
    src: str


def closest(data: RunData, pool: str, target: int, side: int) -> Closest | None:
    """For an unmatched target, its class's nearest reconstruction anyway; None for a matched target or
    an evaluation stored before the closest reconstruction was recorded."""
    a = data.evaluation(pool).arrays
    if "closest" not in a or bool(a["matched"][target]):
        return None
    r = int(a["closest"][target])
    if r < 0:
        return None
    if len(a["recon_assigned"]) != len(data.recon(pool)):
        raise DDCSInputError(f"{data.run.pool_dir(pool)}: the evaluation covers {len(a['recon_assigned'])} "
                             f"reconstructions but recon.npz holds {len(data.recon(pool))}; evaluate the pool again")
    j = int(a["recon_assigned"][r])
    return Closest(r, float(a["closest_dist"][target]), j, int(data.ranks(pool)[j]), float(a["recon_dist"][r]),
                   data.thumb("recon", r, pool, max_side=side, lossless=False))


def shown_path(path: str, source: str) -> str:
    """A source file as the views show it: relative to the data root, the folder that holds the set's
    source folder (lfw-deepfunneled/Person/Person_0001.jpg), not as an absolute path of whichever
    machine made the run."""
    p = PurePath(path)
    if not p.is_absolute():
        return path
    try:
        return p.relative_to(PurePath(source).parent).as_posix()
    except ValueError:
        return PurePath(*p.parts[-3:]).as_posix()


@dataclass(frozen=True)
class Page:
    cards: list[Card]
    page: int
    n_pages: int
    n_filtered: int
    n_total: int
    per_page: int


def class_choices(data: RunData) -> list[str]:
    return [ALL_CLASSES, *data.targets.class_names]


def filtered_order(data: RunData, pool: str, label: str = ALL_CLASSES, status: str = "All") -> np.ndarray:
    """Hardest-first target indices of the pool, keeping one class and/or matched state."""
    if status not in STATUSES:
        raise DDCSInputError(f"status filter must be one of {', '.join(STATUSES)}, got {status!r}")
    order = data.order(pool)
    keep = np.ones(len(order), bool)
    if label and label != ALL_CLASSES:
        names = data.targets.class_names
        if label not in names:
            raise DDCSInputError(f"class {label!r} is not among the targets' classes")
        keep &= data.targets.labels[order] == names.index(label)
    if status != "All":
        matched = data.evaluation(pool).arrays["matched"].astype(bool)[order]
        keep &= matched if status == "Matched" else ~matched
    return order[keep]


def gallery_page(data: RunData, pool: str, page: int = 0, per_page: int = 40, label: str = ALL_CLASSES,
                 status: str = "All", thumb_side: int = 96) -> Page:
    """One page of target cards, hardest first; the page number is clamped into range."""
    if per_page < 1:
        raise DDCSInputError(f"per_page must be positive, got {per_page}")
    order = filtered_order(data, pool, label, status)
    n_pages = max(1, -(-len(order) // per_page))
    page = int(min(max(0, page), n_pages - 1))
    chosen = order[page * per_page:(page + 1) * per_page]
    return Page([card(data, pool, int(t), thumb_side) for t in chosen], page, n_pages, len(order),
                len(data.order(pool)), per_page)


def targets_page(data: RunData, page: int = 0, per_page: int = 40, label: str = ALL_CLASSES,
                 thumb_side: int = 96) -> Page:
    """Before any pool is evaluated: one page of the targets themselves, in stored order (cards with
    no reconstruction, rank 0)."""
    if per_page < 1:
        raise DDCSInputError(f"per_page must be positive, got {per_page}")
    order = np.arange(len(data.targets))
    if label and label != ALL_CLASSES:
        names = data.targets.class_names
        if label not in names:
            raise DDCSInputError(f"class {label!r} is not among the targets' classes")
        order = order[data.targets.labels == names.index(label)]
    n_pages = max(1, -(-len(order) // per_page))
    page = int(min(max(0, page), n_pages - 1))
    names, labels = data.targets.class_names, data.targets.labels
    cards = [Card(int(t), 0, names[int(labels[t])], math.inf, 0.0, False, False, -1,
                  data.thumb("target", int(t), max_side=thumb_side, lossless=False), "")
             for t in order[page * per_page:(page + 1) * per_page]]
    return Page(cards, page, n_pages, len(order), len(data.targets), per_page)


def card(data: RunData, pool: str, target: int, thumb_side: int = 96) -> Card:
    a = data.evaluation(pool).arrays
    j = data.nearest_recon(pool, target)
    return Card(
        target=target, rank=int(data.ranks(pool)[target]),
        label=data.targets.class_names[int(data.targets.labels[target])],
        d_tar=float(a["d_tar"][target]), contribution=float(a["contribution"][target]),
        matched=bool(a["matched"][target]), exact_copy=bool(a["exact_copy"][target]), recon=j,
        target_src=data.thumb("target", target, max_side=thumb_side, lossless=False),
        recon_src=data.thumb("recon", j, pool, max_side=thumb_side, lossless=False) if j >= 0 else "",
        closest=closest(data, pool, target, thumb_side) if j < 0 else None,
    )


# detail ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolHit:
    """How one pool did on one target."""

    pool: str
    evaluated: bool
    matched: bool = False
    d_tar: float = math.inf
    contribution: float = 0.0
    rank: int = 0
    n_assigned: int = 0
    recon: int = -1
    recon_src: str = ""
    recon_path: str = ""
    closest: Closest | None = None


@dataclass(frozen=True)
class Detail:
    target: int
    label: str
    path: str
    target_src: str
    pool: str
    n_targets: int
    hit: PoolHit
    exact_copy: bool
    others: list[PoolHit]


def pool_hit(data: RunData, pool: str, target: int, side: int) -> PoolHit:
    if pool not in data.evaluated:
        return PoolHit(pool, evaluated=False)
    a = data.evaluation(pool).arrays
    j = data.nearest_recon(pool, target)
    recon = data.recon(pool)
    return PoolHit(pool, True, bool(a["matched"][target]), float(a["d_tar"][target]), float(a["contribution"][target]),
                   int(data.ranks(pool)[target]), int(a["n_assigned"][target]), j,
                   data.thumb("recon", j, pool, max_side=side) if j >= 0 else "",
                   shown_path(recon.paths[j], recon.source) if j >= 0 else "",
                   closest(data, pool, target, side) if j < 0 else None)


def detail(data: RunData, pool: str, target: int, side: int = 256, strip_side: int = 128) -> Detail:
    """A target beside its nearest reconstruction in `pool`, and how every pool of the run did on it."""
    n = len(data.targets)
    if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < n:
        raise DDCSInputError(f"target index {target!r} is out of range (0..{n - 1})")
    target = int(target)
    a = data.evaluation(pool).arrays
    return Detail(
        target=target, label=data.targets.class_names[int(data.targets.labels[target])],
        path=shown_path(data.targets.paths[target], data.targets.source),
        target_src=data.thumb("target", target, max_side=side),
        pool=pool, n_targets=n, hit=pool_hit(data, pool, target, side), exact_copy=bool(a["exact_copy"][target]),
        others=[pool_hit(data, p, target, strip_side) for p in data.pools],
    )


def neighbour(data: RunData, pool: str, target: int, step: int) -> int:
    """The target `step` places away in the hardest-first order (wrapping), for prev/next buttons."""
    order = data.order(pool)
    rank = int(data.ranks(pool)[int(target)]) - 1
    return int(order[(rank + step) % len(order)])


# compare ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolMetrics:
    pool: str
    evaluated: bool
    ddcs: float | None = None
    ddcs_avg: float | None = None
    matched: int | None = None
    matched_fraction: float | None = None
    coverage: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    fid: float | None = None
    fid_features: str = ""
    top1: float | None = None
    top5: float | None = None
    knn: float | None = None
    reconstructions: int | None = None
    profile: str = ""


def metrics_rows(data: RunData) -> list[PoolMetrics]:
    """One row per pool of the run, evaluated or not."""
    rows = []
    for pool in data.pools:
        if pool not in data.evaluated:
            rows.append(PoolMetrics(pool, False))
            continue
        r = data.evaluation(pool).report
        prdc, acc, fid = r.get("prdc") or {}, r.get("attack_accuracy") or {}, r.get("fid") or {}
        rows.append(PoolMetrics(
            pool, True, r.get("ddcs"), r.get("ddcs_avg"), r.get("matched"), r.get("matched_fraction"),
            prdc.get("coverage"), prdc.get("precision"), prdc.get("recall"), prdc.get("density"),
            fid.get("value"), fid.get("features", ""), acc.get("top1"), acc.get("top5"), r.get("knn_distance"),
            (r.get("counts") or {}).get("reconstructions"), (r.get("profile") or {}).get("name", ""),
        ))
    return rows


def default_pair(pools: list[str]) -> tuple[str | None, str | None]:
    """Pools to compare first: NGD against entropy when the names say so, else the first two."""
    def find(word: str) -> str | None:
        return next((p for p in pools if word in p.lower()), None)

    a, b = find("ngd"), find("entropy")
    if a and b and a != b:
        return a, b
    if len(pools) >= 2:
        return pools[-1], pools[0]
    return (pools[0], None) if pools else (None, None)


@dataclass(frozen=True)
class Difference:
    a_only: np.ndarray  # targets matched by A, not by B; best reconstructed by A first
    b_only: np.ndarray
    both: int
    neither: int


def match_difference(data: RunData, pool_a: str, pool_b: str) -> Difference:
    """Targets one pool reaches and the other does not, each sorted by the reaching pool's d_tar."""
    if pool_a == pool_b:
        raise DDCSInputError("pick two different pools to compare")
    a, b = data.evaluation(pool_a).arrays, data.evaluation(pool_b).arrays
    ma, mb = a["matched"].astype(bool), b["matched"].astype(bool)

    def by_distance(mask: np.ndarray, d: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return idx[np.lexsort((idx, d[idx]))]

    return Difference(by_distance(ma & ~mb, a["d_tar"]), by_distance(mb & ~ma, b["d_tar"]),
                      int((ma & mb).sum()), int((~ma & ~mb).sum()))


def grid_files(data: RunData) -> list[tuple[str, Path]]:
    """Fixed-latent sample grids in <run>/grids/, vanilla/entropy/ngd first, each confined to the run."""
    folder = data.run.path / "grids"
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in GRID_SUFFIXES and p.is_file()]

    def key(p: Path) -> tuple:
        stem = p.stem.lower()
        first = next((i for i, w in enumerate(GRID_ORDER) if w in stem), len(GRID_ORDER))
        return first, stem

    return [(p.stem, data.run.safe_path(Path("grids") / p.name)) for p in sorted(files, key=key)]


# defense ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exposure:
    rank: int
    target: int
    path: str
    label: str
    matched: bool
    exact_copy: bool
    d_tar: float
    contribution: float
    pool: str
    n_assigned: int


def exposure_ranking(data: RunData, pool: str = ALL_POOLS) -> list[Exposure]:
    """Every target, most exposed first: exact copies, then smallest d_tar; unreached targets last.

    With ALL_POOLS a target counts as reached as closely as its best pool reached it, since a data
    owner cares whether any attack came close.
    """
    pools = data.evaluated if pool == ALL_POOLS else [pool]
    if not pools:
        raise DDCSInputError(f"run {data.name} has no evaluated pool yet")
    n = len(data.targets)
    stack = np.stack([data.evaluation(p).arrays["d_tar"].astype(np.float64) for p in pools])
    best = stack.argmin(axis=0)
    d = stack[best, np.arange(n)]
    assigned = np.stack([data.evaluation(p).arrays["n_assigned"] for p in pools])[best, np.arange(n)]
    matched = np.isfinite(d)
    contribution = np.where(matched & (d > 0), 1.0 / (n * np.where(d > 0, d, 1.0)), 0.0)
    contribution[matched & (d == 0)] = np.inf
    order = np.lexsort((np.arange(n), d))
    names, labels, paths = data.targets.class_names, data.targets.labels, data.targets.paths
    return [Exposure(rank, int(t), paths[t], names[int(labels[t])], bool(matched[t]), bool(matched[t] and d[t] == 0),
                     float(d[t]), float(contribution[t]), pools[int(best[t])] if matched[t] else "", int(assigned[t]))
            for rank, t in enumerate(order, start=1)]


def exposure_csv(rows: list[Exposure]) -> str:
    buf = io.StringIO()
    fields = list(Exposure.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buf.getvalue()


def write_exposure_csv(data: RunData, pool: str = ALL_POOLS) -> Path:
    """The ranking as <run>/exports/exposure-<pool>.csv (atomic), the only file the app offers to download."""
    slug = "all-pools" if pool == ALL_POOLS else pool
    path = data.run.safe_path(Path("exports") / f"exposure-{slug}.csv")
    atomic.write_text(path, exposure_csv(exposure_ranking(data, pool)))
    return path
