"""Near-ties: where DDCS may differ between machines (README "Reproducibility contract").

Across machines (AVX-512 vs AVX2 CPUs, GPUs) the LPIPS embeddings differ at float32 rounding, so a
distance d moves by at most CROSS_MACHINE_RTOL * d + CROSS_MACHINE_ATOL (measured AVX-512 vs AVX2,
LPIPS-alex: 1.1e-6 relative and 1.5e-7 absolute on LFW at 64 px, 2.3e-6 relative on the 32 px test
images; the tolerance leaves a factor 4-10). DDCS is continuous in the distances except where a reconstruction is (nearly)
equidistant from its two nearest eligible targets: there the assignment, and with it two targets'
d_tar, can flip. Those near-ties are counted so a reader knows whether a result is machine-robust.
"""

from __future__ import annotations

import numpy as np

CROSS_MACHINE_RTOL = 1e-5
CROSS_MACHINE_ATOL = 1e-7


def distance_tolerance(d: np.ndarray | float) -> np.ndarray | float:
    """How far a distance may move between machines: |d_A - d_B| <= this."""
    return CROSS_MACHINE_RTOL * np.abs(d) + CROSS_MACHINE_ATOL


def near_ties(best: np.ndarray, best_index: np.ndarray, second: np.ndarray, second_index: np.ndarray) -> dict:
    """Reconstructions whose runner-up target is within the cross-machine tolerance of their nearest one,
    and the targets they involve (at most these targets' d_tar can change on another machine)."""
    best, second = np.asarray(best, np.float64), np.asarray(second, np.float64)
    has_two = np.isfinite(best) & np.isfinite(second)
    tie = np.zeros(len(best), bool)
    tie[has_two] = second[has_two] - best[has_two] <= distance_tolerance(best[has_two]) + distance_tolerance(second[has_two])
    involved = np.unique(np.concatenate([np.asarray(best_index)[tie], np.asarray(second_index)[tie]]))
    return {"reconstructions": int(tie.sum()), "targets": int(len(involved)),
            "rtol": CROSS_MACHINE_RTOL, "atol": CROSS_MACHINE_ATOL}
