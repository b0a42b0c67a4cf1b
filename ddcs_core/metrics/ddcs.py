"""DDCS: per-target reconstruction quality of a model inversion attack (DESIGN.md §2).

Each reconstruction is assigned to its LPIPS-nearest target (of its class); a target's score is
the distance of its closest assigned reconstruction. Diversity enters through the assignment:
duplicates collapse onto one target and count once.
"""

from dataclasses import dataclass

import numpy as np

from ddcs_core.errors import DDCSInputError

_NEG_TOL = 1e-6


@dataclass(frozen=True)
class DDCSResult:
    """DDCS plus the per-target arrays the report and the app show (all of length |T|).

    Attributes:
        ddcs: mean over targets of 1 / d_tar (unmatched targets and exact copies add 0).
        ddcs_avg: the same with each matched target's mean assigned distance instead of its minimum.
        d_tar: distance of each target's closest assigned reconstruction (inf when unmatched).
        nearest: index of that reconstruction (-1 when unmatched).
        n_assigned: how many reconstructions were assigned to each target.
        contribution: each target's share of `ddcs` (inf for exact copies).
        matched: targets with at least one assigned reconstruction.
        exact_copy: matched targets at distance 0, left out of `ddcs` and `ddcs_avg`.
    """

    ddcs: float
    ddcs_avg: float
    d_tar: np.ndarray
    nearest: np.ndarray
    n_assigned: np.ndarray
    contribution: np.ndarray
    matched: np.ndarray
    exact_copy: np.ndarray

    @property
    def n_targets(self) -> int:
        return int(self.d_tar.shape[0])

    @property
    def n_matched(self) -> int:
        return int(self.matched.sum())

    @property
    def matched_fraction(self) -> float:
        return self.n_matched / self.n_targets

    @property
    def n_exact_copies(self) -> int:
        return int(self.exact_copy.sum())


def _check_dist(dist: np.ndarray) -> np.ndarray:
    """Validate the (R, T) distance matrix; clamp float-error negatives to 0."""
    d = np.asarray(dist)
    if d.ndim != 2:
        raise DDCSInputError(f"dist: expected a 2-D (reconstructions, targets) array, got shape {d.shape}")
    if d.shape[1] == 0:
        raise DDCSInputError("dist: there are no targets (shape[1] == 0)")
    if not np.issubdtype(d.dtype, np.number) or np.iscomplexobj(d):
        raise DDCSInputError(f"dist: expected real numbers, got dtype {d.dtype}")
    d = d.astype(np.float64, copy=True)
    if not np.isfinite(d).all():
        raise DDCSInputError(f"dist: {int((~np.isfinite(d)).sum())} entries are NaN or infinite")
    if d.size and d.min() < -_NEG_TOL:
        raise DDCSInputError(f"dist: distances must be >= 0, found {d.min():.3g}")
    np.maximum(d, 0.0, out=d)
    return d


def _check_labels(labels: np.ndarray, n: int, name: str, axis: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DDCSInputError(f"{name}: expected shape ({n},) to match dist's {axis} axis, got {lab.shape}")
    return lab


def _assign(d: np.ndarray, recon_labels: np.ndarray, target_labels: np.ndarray,
            class_agnostic: bool) -> np.ndarray:
    """Index of each reconstruction's nearest eligible target; ties go to the lowest index."""
    if class_agnostic:
        return d.argmin(axis=1)
    missing = np.setdiff1d(recon_labels, target_labels)
    if missing.size:
        shown = ", ".join(map(str, missing[:10].tolist()))
        raise DDCSInputError(
            f"recon_labels: {missing.size} class(es) have no target of that class ({shown}); "
            "filter those reconstructions out first"
        )
    # One block per class: the work is ~R*T/classes and ties keep the lowest target index.
    assigned = np.empty(d.shape[0], dtype=np.int64)
    for label in np.unique(recon_labels):
        rows = np.flatnonzero(recon_labels == label)
        cols = np.flatnonzero(target_labels == label)
        assigned[rows] = cols[d[np.ix_(rows, cols)].argmin(axis=1)]
    return assigned


def ddcs(dist: np.ndarray, recon_labels: np.ndarray, target_labels: np.ndarray, *,
         class_agnostic: bool = False) -> DDCSResult:
    """DDCS of reconstructions against targets from their (R, T) LPIPS distances.

    Exact copies (d_tar == 0) are left out of `ddcs` and `ddcs_avg` so the score stays finite;
    they are flagged in `exact_copy` (contribution np.inf) for the report to state.

    Args:
        dist: (R, T) non-negative finite distances, reconstructions by targets.
        recon_labels: (R,) class of each reconstruction.
        target_labels: (T,) class of each target.
        class_agnostic: assign each reconstruction over all targets instead of its class's.

    Returns:
        The DDCSResult: the score and its per-target arrays.

    Raises:
        DDCSInputError: a malformed matrix or label array, or (class-conditional) a reconstruction
            class without any target.
    """
    d = _check_dist(dist)
    n_rec, n_tar = d.shape
    rl = _check_labels(recon_labels, n_rec, "recon_labels", "first (reconstruction)")
    tl = _check_labels(target_labels, n_tar, "target_labels", "second (target)")

    assigned = _assign(d, rl, tl, class_agnostic)
    return ddcs_from_assignment(assigned, d[np.arange(n_rec), assigned], n_tar)


def ddcs_from_assignment(assigned: np.ndarray, d_rec: np.ndarray, n_targets: int) -> DDCSResult:
    """DDCS from each reconstruction's assigned target and its distance to it.

    This is all DDCS needs, so a streaming nearest-target search can feed it without ever holding
    the full (R, T) matrix.

    Args:
        assigned: (R,) target index of each reconstruction, in [0, n_targets).
        d_rec: (R,) distance of each reconstruction to its assigned target.
        n_targets: number of targets T (unassigned targets count as unmatched).

    Returns:
        The DDCSResult, as `ddcs` returns it.

    Raises:
        DDCSInputError: no targets, mismatched shapes, an index out of range or a non-finite distance.
    """
    assigned = np.asarray(assigned, dtype=np.int64)
    d_rec = np.maximum(np.asarray(d_rec, dtype=np.float64), 0.0)
    n_rec, n_tar = assigned.shape[0], int(n_targets)
    if n_tar <= 0:
        raise DDCSInputError("there are no targets")
    if d_rec.shape != assigned.shape:
        raise DDCSInputError(f"distances {d_rec.shape} and assignments {assigned.shape} differ in shape")
    if n_rec and (assigned.min() < 0 or assigned.max() >= n_tar):
        raise DDCSInputError("every reconstruction must be assigned to a target index in [0, n_targets)")
    if not np.isfinite(d_rec).all():
        raise DDCSInputError("assigned distances contain NaN or infinity")
    n_assigned = np.bincount(assigned, minlength=n_tar).astype(np.int64)
    matched = n_assigned > 0
    # Sort by (target, distance, reconstruction index): the first row of each target is its nearest.
    order = np.lexsort((np.arange(n_rec), d_rec, assigned))
    targets, first = np.unique(assigned[order], return_index=True)
    nearest = np.full(n_tar, -1, dtype=np.int64)
    nearest[targets] = order[first]
    d_tar = np.full(n_tar, np.inf)
    d_tar[targets] = d_rec[nearest[targets]]

    exact_copy = matched & (d_tar == 0.0)
    scored = matched & ~exact_copy
    contribution = np.zeros(n_tar)
    contribution[scored] = 1.0 / (n_tar * d_tar[scored])
    contribution[exact_copy] = np.inf

    mean_d = np.bincount(assigned, weights=d_rec, minlength=n_tar)[matched] / n_assigned[matched]
    positive_mean = mean_d[mean_d > 0]
    return DDCSResult(
        ddcs=float(np.sum(1.0 / d_tar[scored]) / n_tar),
        ddcs_avg=float(np.sum(1.0 / positive_mean) / n_tar),
        d_tar=d_tar,
        nearest=nearest,
        n_assigned=n_assigned,
        contribution=contribution,
        matched=matched,
        exact_copy=exact_copy,
    )


def hardest_first(d_tar: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """Target indices, hardest first: unmatched targets, then by descending d_tar, ties by index. The one
    ranking of targets.csv and the app's cards, so a rank means the same everywhere."""
    key = -np.where(matched, d_tar, np.inf)
    return np.lexsort((np.arange(len(d_tar)), key))
