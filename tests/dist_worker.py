"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): one tiny inversion or transfer.

Usage: dist_worker.py WORK OUT [KILL_RANK] (inversion) — rank 0 writes the pool to OUT (.npz); with
KILL_RANK, that rank dies (exit 1) when asked for the second time whether to stop, i.e. after its
first class is saved, like a machine lost mid-run.
dist_worker.py transfer MODE PROJECTION OUT [KILL_RANK] — a tiny transfer into the folder OUT; with
KILL_RANK, that rank dies before step 4 (after 3 steps; the last checkpoint is step 2's).
"""

import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False  # as the test's own process: the same arithmetic

from ddcs_core import distributed  # noqa: E402
from ddcs_core.attacks import InversionConfig, invert  # noqa: E402
from ddcs_core.transfer import TransferConfig, transfer  # noqa: E402
from tests.tiny_world import public_images, tiny_classifier, tiny_embed, tiny_gan  # noqa: E402

CLASSES = [0, 1, 2, 3]


def config() -> InversionConfig:
    return InversionConfig(search_size=24, candidates_per_class=3, steps=3, lr=0.05, final_per_class=2,
                           final_views=3, batch_size=4, init_views=2, seed=1)


def tiny_pool(work: str | None, should_stop=None):
    G, victim = tiny_gan()[0], tiny_classifier(classes=len(CLASSES))
    return invert(G, victim, CLASSES, config(), name="p", class_names=[f"c{k}" for k in CLASSES], work_dir=work,
                  progress=False, should_stop=should_stop)


def tiny_transfer(mode: str, projection: str, out: str, should_stop=None) -> dict:
    """5 steps of batch 8 (two minibatch-stddev groups of 4 per rank with 2 ranks), a checkpoint every 2."""
    G, D = tiny_gan()
    cfg = TransferConfig(mode=mode, projection=projection, steps=5, batch_size=8, k=3, reference_latents=3,
                         ckpt_every=2, grid=2, lam=0.5)
    return transfer(G, D, tiny_classifier(), public_images(), cfg, out, embed_fn=tiny_embed(), progress=False,
                    should_stop=should_stop)


def killer(kill_rank: int | None, at: int):
    """A should_stop that ends rank `kill_rank` (exit 1, no cleanup) the `at`-th time it is asked."""
    asked = {"n": 0}

    def should_stop() -> bool:
        asked["n"] += 1
        if distributed.context().rank == kill_rank and asked["n"] == at:
            os._exit(1)
        return False

    return should_stop


def main() -> None:
    if sys.argv[1] == "transfer":
        _, _, mode, projection, out, *rest = sys.argv
        distributed.setup("cpu")
        tiny_transfer(mode, projection, out, killer(int(rest[0]) if rest else None, 4))
        distributed.teardown()
        return
    _, work, out, *rest = sys.argv
    distributed.setup("cpu")
    should_stop = killer(int(rest[0]) if rest else None, 2)

    result = tiny_pool(work, should_stop)
    if distributed.is_main():
        np.savez(out, images=result.images, labels=result.labels, latents=result.latents,
                 confidence=result.confidence, paths=np.array(result.paths))
    distributed.teardown()


if __name__ == "__main__":
    main()
