"""The reproducibility contract (README "Reproducibility contract").

On one machine and kernel path, evaluating fixed images is a function of the images: DDCS, DDCS_avg,
d_tar and the assignment agree to 1e-9 relative whatever the batch size, memory cap, cache state,
order or duplication of the reconstructions. Across kernel paths (AVX-512 vs AVX2 here) distances
agree within ddcs_core.metrics.ties.distance_tolerance, and the assignment is identical except at
the near-ties the report counts. `make test` runs this file once more under the AVX2 path.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddcs_core.data.images import ImageSet
from ddcs_core.evaluate import EvalConfig, evaluate_sets
from ddcs_core.metrics.ties import CROSS_MACHINE_RTOL, distance_tolerance, near_ties
from ddcs_core.perceptual import PerceptualDistance
from ddcs_core.perceptual.pairwise import embed_batch

from tests.conftest import REPO

SIZE = 32
SAME_PATH_RTOL = 1e-9
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def make_world(seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Three classes of smooth little faces-like images; the last reconstruction copies a target."""
    rng = np.random.default_rng(seed)

    def faces(n, label):
        base = np.random.default_rng(100 + label).uniform(0, 255, (1, 3, 4, 4))
        low = torch.from_numpy(np.clip(base + rng.normal(0, 35, (n, 3, 4, 4)), 0, 255))
        up = torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return up.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()

    names = [f"person_{c}" for c in range(3)]
    t_img = np.concatenate([faces(8, c) for c in range(3)])
    r_img = np.concatenate([faces(7, c) for c in range(3)] + [t_img[2:3]])
    t_lab, r_lab = np.repeat(np.arange(3), 8), np.r_[np.repeat(np.arange(3), 7), 0]
    targets = ImageSet(t_img, t_lab, names, [f"t/{i}.png" for i in range(len(t_img))], "targets")
    recon = ImageSet(r_img, r_lab, names, [f"r/{i}.png" for i in range(len(r_img))], "recon")
    return targets, recon


def summary(targets: ImageSet, recon: ImageSet, config: EvalConfig | None = None) -> dict:
    """The numbers the contract is about, keyed by file so reordered inputs compare directly."""
    ev = evaluate_sets(targets, recon, config or EvalConfig())
    assigned = {recon.paths[i]: targets.paths[j] for i, j in enumerate(ev.assigned)}
    return {"ddcs": ev.report["ddcs"], "ddcs_avg": ev.report["ddcs_avg"], "d_tar": ev.result.d_tar.tolist(),
            "assigned": assigned, "near_ties": ev.report["near_ties"], "exact_copies": ev.report["exact_copies"]}


def assert_same_evaluation(a: dict, b: dict) -> None:
    assert a["ddcs"] == pytest.approx(b["ddcs"], rel=SAME_PATH_RTOL)
    assert a["ddcs_avg"] == pytest.approx(b["ddcs_avg"], rel=SAME_PATH_RTOL)
    np.testing.assert_allclose(a["d_tar"], b["d_tar"], rtol=SAME_PATH_RTOL, atol=0)
    assert a["assigned"] == b["assigned"]
    assert a["near_ties"] == b["near_ties"] and a["exact_copies"] == b["exact_copies"] == 1


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def reference(world):
    return summary(*world)


def test_embedding_does_not_depend_on_batch_or_slot(world):
    """By construction (every forward pass holds embed_batch(dim) images) and checked: bit-identical rows,
    whichever slot of which forward pass an image lands in."""
    imgs = np.concatenate([world[0].images, world[1].images])
    metric = PerceptualDistance("alex", device="cpu", cache=False)
    batch = embed_batch(metric.embedding_dim(SIZE, SIZE))
    imgs = np.concatenate([imgs] * -(-(batch + 5) // len(imgs)))  # more than one forward pass
    ref = metric.embed(imgs)
    rng = np.random.default_rng(1)
    for idx in (np.arange(1), np.arange(3, 4), rng.permutation(len(imgs)), rng.permutation(len(imgs))[:batch - 3]):
        got = metric.embed(imgs, idx)
        np.testing.assert_array_equal(got.emb, ref.emb[idx])
        np.testing.assert_array_equal(got.pooled, ref.pooled[idx])
    alone = PerceptualDistance("alex", device="cpu", batch_size=1, cache=False).embed(imgs[5:6])
    np.testing.assert_array_equal(alone.emb, ref.emb[5:6])


@pytest.mark.parametrize("config", [EvalConfig(batch_size=1), EvalConfig(batch_size=5, memory_cap_gb=1e-4),
                                    EvalConfig(memory_cap_gb=1e-3)], ids=["batch1", "tiny-cap", "small-cap"])
def test_evaluation_does_not_depend_on_batch_size_or_memory_cap(world, reference, config):
    assert_same_evaluation(summary(*world, config), reference)


def test_evaluation_does_not_depend_on_cache_state(world, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("DDCS_CACHE", str(tmp_path / "cold"))
    cold, warm = summary(*world), summary(*world)
    assert any((tmp_path / "cold" / "embeddings").glob("*.emb.npy"))
    monkeypatch.setattr(PerceptualDistance, "embed_cached", lambda self, *a, **k: None)
    disabled = summary(*world)
    for got in (cold, warm, disabled):
        assert_same_evaluation(got, reference)


def test_evaluation_does_not_depend_on_thread_count(world, reference):
    """What a different number of pytest workers (or cores) changes; checked for 1 vs 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)
    try:
        assert_same_evaluation(summary(*world), reference)
    finally:
        torch.set_num_threads(before)


def test_evaluation_does_not_depend_on_order_or_duplicates(world, reference):
    targets, recon = world
    perm = np.random.default_rng(2).permutation(len(recon))
    shuffled = ImageSet(recon.images[perm], recon.labels[perm], recon.class_names, [recon.paths[i] for i in perm], "recon")
    assert_same_evaluation(summary(targets, shuffled), reference)
    doubled = ImageSet(np.concatenate([recon.images, recon.images]), np.r_[recon.labels, recon.labels],
                       recon.class_names, recon.paths + [f"dup/{p}" for p in recon.paths], "recon")
    got = summary(targets, doubled)
    assert got["ddcs"] == pytest.approx(reference["ddcs"], rel=SAME_PATH_RTOL)
    assert got["ddcs_avg"] == pytest.approx(reference["ddcs_avg"], rel=SAME_PATH_RTOL)
    np.testing.assert_allclose(got["d_tar"], reference["d_tar"], rtol=SAME_PATH_RTOL, atol=0)
    assert all(got["assigned"][f"dup/{p}"] == got["assigned"][p] == t for p, t in reference["assigned"].items())


def test_runner_up_and_near_ties():
    best = np.array([0.10, 0.20, 0.0, 0.3, np.inf])
    second = np.array([0.10 + 5e-7, 0.21, 1e-7, np.inf, np.inf])
    ties = near_ties(best, np.array([0, 1, 2, 3, -1]), second, np.array([4, 5, 6, -1, -1]))
    assert ties["reconstructions"] == 2 and ties["targets"] == 4 and ties["rtol"] == CROSS_MACHINE_RTOL


def _other_kernel_path_env() -> dict:
    """The AVX2 path from the default one, the default from AVX2 (so both `make test` passes cross paths)."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    if not all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        env.update(AVX2_ENV)
    return env


def test_evaluation_across_kernel_paths_agrees_within_the_cross_machine_tolerance(reference):
    code = ("import json; from tests.test_reproducibility import make_world, summary; "
            "print(json.dumps(summary(*make_world())))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_other_kernel_path_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reference["near_ties"]["reconstructions"] == other["near_ties"]["reconstructions"] == 0
    assert other["assigned"] == reference["assigned"]  # no near-ties: the assignment may not change
    d_ref, d_other = np.array(reference["d_tar"]), np.array(other["d_tar"])
    finite = np.isfinite(d_ref)
    assert np.array_equal(finite, np.isfinite(d_other))
    assert np.all(np.abs(d_other[finite] - d_ref[finite]) <= distance_tolerance(d_ref[finite]))
    scored = finite & (d_ref > 0)
    # DDCS = mean of 1/d_tar: each term moves by at most tol(d)/d^2 (to first order)
    ddcs_bound = np.sum(distance_tolerance(d_ref[scored]) / d_ref[scored] ** 2) / len(d_ref)
    assert abs(other["ddcs"] - reference["ddcs"]) <= ddcs_bound
