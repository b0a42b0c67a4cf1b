"""A real-data evaluation that needs no trained model: LFW's held-out photos as an oracle "attack".

The private people's held-out photos play the reconstructions, so the example shows what DDCS,
coverage and the per-target table look like when every identity is reached by real images.
"""

from __future__ import annotations

from pathlib import Path

from ddcs_core.data.lfw import lfw_dir, prepare_lfw
from ddcs_core.evaluate import EvalConfig, Evaluation, evaluate_sets, write_evaluation
from ddcs_core.perceptual.weights import cache_dir


def oracle_example(out_dir: str | Path, data_root: str | Path | None = None, progress: bool = True) -> Evaluation:
    """Evaluate LFW private held-out photos against the private training targets (64x64, fast profile)."""
    data = prepare_lfw(lfw_dir(Path(data_root) if data_root else None), cache_dir() / "lfw", progress=progress)
    notes = ["reconstructions = LFW held-out photos of the private people (oracle attack)",
             "k = 2 for precision/recall/density/coverage: only 3 held-out photos per person (k must be smaller)"]
    ev = evaluate_sets(data["private_train"], data["private_test"], EvalConfig(nearest_k=2), progress=progress,
                       notes=notes)
    write_evaluation(out_dir, ev)
    return ev
