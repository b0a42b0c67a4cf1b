"""The sweep's aggregation: seeded bootstrap intervals over seeds and Pareto fronts."""

import math

import numpy as np

from ddcs_core.tradeoff import aggregate, bootstrap_ci, pareto_front


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = [10.0, 12.0, 14.0, 11.0]
    mean, low, high = bootstrap_ci(values, resamples=1000, seed=3)
    assert mean == np.mean(values) and min(values) <= low < mean < high <= max(values)
    assert bootstrap_ci(values, resamples=1000, seed=3) == (mean, low, high)
    wider = bootstrap_ci([0.0, 100.0, 50.0, 20.0], resamples=1000, seed=3)
    assert wider[2] - wider[1] > high - low


def test_bootstrap_ci_small_samples():
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    mean, low, high = bootstrap_ci([7.0, math.nan])
    assert mean == 7.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_pareto_front():
    # cost (FID, lower better), gain (confidence, higher better)
    cost = [100, 90, 120, 90, 80, math.nan]
    gain = [0.5, 0.4, 0.9, 0.4, 0.2, 0.99]
    assert pareto_front(cost, gain) == [4, 1, 3, 0, 2]  # ties (1, 3) are both kept
    assert pareto_front([1, 2, 3], [0.9, 0.5, 0.1]) == [0]  # the first dominates the rest
    assert pareto_front([], []) == []


def test_aggregate_groups_by_method_and_lam():
    points = [{"method": m, "mode": "entropy", "lam": lam, "seed": s, "gen_fid": fid + s, "victim_confidence": conf}
              for m, lam, fid, conf in (("a", 0.01, 100, 0.5), ("a", 0.03, 120, 0.7), ("a", 0.1, 130, 0.6),
                                        ("b", 0.01, 90, 0.8))
              for s in (0, 1, 2)]
    rows = aggregate(points, resamples=200, seed=0)
    assert [(r["method"], r["lam"], r["n"], r["seeds"]) for r in rows] == [
        ("a", 0.01, 3, [0, 1, 2]), ("a", 0.03, 3, [0, 1, 2]), ("a", 0.1, 3, [0, 1, 2]), ("b", 0.01, 3, [0, 1, 2])]
    assert rows[0]["gen_fid"] == 101 and rows[0]["gen_fid_lo"] <= 101 <= rows[0]["gen_fid_hi"]
    assert [r["pareto"] for r in rows] == [True, True, False, True]  # λ=0.1 is beaten by λ=0.03
    assert math.isnan(rows[0]["ddcs"])  # no pools
