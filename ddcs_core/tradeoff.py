"""Aggregation of a sweep's points: bootstrap intervals over seeds and Pareto fronts (pure functions).

A single seed at a hand-picked λ cannot tell two methods apart when run-to-run noise is ~15 FID, so a
sweep reports per-(method, λ) means with a percentile-bootstrap interval over its seeds, and each
method's Pareto front over those means (lower generator FID, higher victim confidence: the points no
other λ of the same method beats on both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METRICS = ("gen_fid", "victim_confidence", "victim_entropy", "ddcs", "coverage", "acc1")


def bootstrap_ci(values: Sequence[float], resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile-bootstrap interval at `level`, with a
    seeded generator so a table is reproducible. NaN values are dropped; fewer than 2 values give
    NaN bounds (one seed has no spread to resample), none gives all NaN."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


def pareto_front(cost: Sequence[float], gain: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (cost ≤ and gain ≥, one of them strictly),
    in order of increasing cost; points with a NaN coordinate are never on the front."""
    c = np.asarray(cost, dtype=np.float64)
    g = np.asarray(gain, dtype=np.float64)
    ok = [i for i in range(len(c)) if not (math.isnan(c[i]) or math.isnan(g[i]))]
    front = []
    for i in ok:
        dominated = any(c[j] <= c[i] and g[j] >= g[i] and (c[j] < c[i] or g[j] > g[i]) for j in ok)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (c[i], -g[i]))


def aggregate(points: list[dict], resamples: int = 2000, seed: int = 0) -> list[dict]:
    """One row per (method, λ) in first-seen order: n seeds, and per metric its mean, `<metric>_lo` and
    `<metric>_hi`; `pareto` marks the rows on their method's front (gen_fid vs victim_confidence)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["lam"]), []).append(p)
    rows = []
    for (method, lam), members in groups.items():
        row = {"method": method, "mode": members[0].get("mode"), "lam": lam, "n": len(members),
               "seeds": sorted(p["seed"] for p in members)}
        for metric in METRICS:
            values = [p.get(metric) for p in members]
            mean, low, high = bootstrap_ci([v for v in values if v is not None], resamples, seed=seed)
            row.update({metric: mean, f"{metric}_lo": low, f"{metric}_hi": high})
        rows.append(row)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        front = set(pareto_front([r["gen_fid"] for r in mine], [r["victim_confidence"] for r in mine]))
        for i, r in enumerate(mine):
            r["pareto"] = i in front
    return rows
