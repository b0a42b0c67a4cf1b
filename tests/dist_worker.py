"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): one tiny inversion.

Usage: dist_worker.py invert WORK OUT [KILL_RANK] — rank 0 writes the pool to OUT (.npz); with
KILL_RANK, that rank dies (exit 1) when asked for the second time whether to stop, i.e. after its
first class is saved, like a machine lost mid-run.
"""

import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False  # as the test's own process: the same arithmetic

from ddcs_core import distributed  # noqa: E402
from ddcs_core.attacks import InversionConfig, invert  # noqa: E402
from tests.tiny_world import tiny_classifier, tiny_gan  # noqa: E402

CLASSES = [0, 1, 2, 3]


def config() -> InversionConfig:
    return InversionConfig(search_size=24, candidates_per_class=3, steps=3, lr=0.05, final_per_class=2,
                           final_views=3, batch_size=4, init_views=2, seed=1)


def tiny_pool(work: str | None, should_stop=None):
    G, victim = tiny_gan()[0], tiny_classifier(classes=len(CLASSES))
    return invert(G, victim, CLASSES, config(), name="p", class_names=[f"c{k}" for k in CLASSES], work_dir=work,
                  progress=False, should_stop=should_stop)


def main() -> None:
    _, work, out, *rest = sys.argv
    distributed.setup("cpu")
    kill_rank = int(rest[0]) if rest else None
    asked = {"n": 0}

    def should_stop() -> bool:
        asked["n"] += 1
        if distributed.context().rank == kill_rank and asked["n"] == 2:
            os._exit(1)
        return False

    result = tiny_pool(work, should_stop)
    if distributed.is_main():
        np.savez(out, images=result.images, labels=result.labels, latents=result.latents,
                 confidence=result.confidence, paths=np.array(result.paths))
    distributed.teardown()


if __name__ == "__main__":
    main()
