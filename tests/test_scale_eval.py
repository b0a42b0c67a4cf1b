"""Evaluation at scale: a skipped target cache is reported, float16 key storage has a bounded error and
its own cache key, and class-by-class streaming gives the in-memory path's numbers."""

import logging

import numpy as np
import pytest

from ddcs_core.data.images import ImageSet
from ddcs_core.evaluate import EvalConfig, evaluate_sets
from ddcs_core.perceptual import PerceptualDistance
from ddcs_core.perceptual.pairwise import embed_batch
from ddcs_core.perceptual.weights import cache_dir


def _faces(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Smooth random images (blocks upsampled), closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return np.repeat(np.repeat(small, size // 4, axis=1), size // 4, axis=2) // 2 + \
        rng.integers(0, 128, (n, size, size, 3), dtype=np.uint8)


def _set(images: np.ndarray, labels: np.ndarray, name: str) -> ImageSet:
    return ImageSet(images, labels.astype(np.int64), [f"c{i}" for i in range(labels.max() + 1)],
                    [f"{name}#{i}" for i in range(len(images))], name)


def test_skipped_cache_is_reported_with_size_cap_and_option(caplog):
    labels = np.repeat(np.arange(2), 3)
    targets, recon = _set(_faces(6, 1), labels, "t"), _set(_faces(6, 2), labels, "r")
    with caplog.at_level(logging.WARNING, logger="ddcs_core"):
        ev = evaluate_sets(targets, recon, EvalConfig(device="cpu", features="lpips", nearest_k=1, cache_cap_gb=1e-6))
    status = ev.report["target_embeddings"]
    assert status["cache"] == "skipped" and status["dtype"] == "float32" and status["bytes"] > status["cap_bytes"]
    note = next(n for n in ev.report["notes"] if "cache skipped" in n)
    assert "--cache-cap-gb" in note and "GiB" in note and "GB" in note
    assert note in caplog.text
    roomy = evaluate_sets(targets, recon, EvalConfig(device="cpu", features="lpips", nearest_k=1))
    assert roomy.report["target_embeddings"]["cache"] in ("written", "read")
    assert not any("cache skipped" in n for n in roomy.report["notes"])
    np.testing.assert_allclose(roomy.result.d_tar, ev.result.d_tar, rtol=1e-9)


def test_float16_cache_round_trip_has_bounded_error_and_its_own_key():
    imgs, queries = _faces(6, 3), _faces(4, 4)
    full = PerceptualDistance("alex", device="cpu")
    half = PerceptualDistance("alex", device="cpu", key_dtype="float16")
    e32, e16 = full.embed_cached(imgs), half.embed_cached(imgs)
    assert e32.emb.dtype == np.float32 and e16.emb.dtype == np.float16
    files = {p.name for p in (cache_dir() / "embeddings").glob("*.emb.npy")}
    assert any("-float16-" in f for f in files) and any("-float32-" in f for f in files)
    assert half.cache_status["cache"] == "written" and half.embed_cached(imgs) is not None
    assert half.cache_status == {"cache": "read", "dtype": "float16", "bytes": e16.emb.nbytes,
                                 "cap_bytes": half.cache_cap}
    groups = [(np.arange(4), np.arange(6))]
    n32 = full.nearest(queries, imgs, groups, key_cache=e32)
    n16 = half.nearest(queries, imgs, groups, key_cache=e16)
    n16_uncached = half.nearest(queries, imgs, groups)  # rounded to float16 too: the cache state changes nothing
    np.testing.assert_allclose(n16_uncached.distance, n16.distance, rtol=1e-9)
    np.testing.assert_array_equal(n16.index, n32.index)
    np.testing.assert_allclose(n16.distance, n32.distance, rtol=2e-3)
    assert not np.array_equal(n16.distance, n32.distance)
    with pytest.raises(Exception, match="--cache-dtype"):
        PerceptualDistance("alex", device="cpu", key_dtype="bfloat16")


def test_class_by_class_streaming_equals_in_memory_search(monkeypatch):
    sizes_t = [3, 2, 20, 4, 1, 5]  # one class (20) larger than a bin
    t_labels, r_labels = np.repeat(np.arange(6), sizes_t), np.repeat(np.arange(6), 6)
    targets, recon = _faces(len(t_labels), 5, size=96), _faces(len(r_labels), 6, size=96)
    groups = [(np.flatnonzero(r_labels == c), np.flatnonzero(t_labels == c)) for c in range(6)]
    roomy = PerceptualDistance("alex", device="cpu", cache=False)
    dim = roomy.embedding_dim(96, 96)
    assert embed_batch(dim) == 16
    tight = PerceptualDistance("alex", device="cpu", cache=False, memory_cap_gb=6 * dim * 16 / 2**30)  # 6 keys
    tight.embedding_dim(96, 96)
    ref = roomy.nearest(recon, targets, groups)
    forwarded = []
    real = tight.model.forward
    monkeypatch.setattr(tight.model, "forward", lambda x, **kw: forwarded.append(len(x)) or real(x, **kw))
    got = tight.nearest(recon, targets, groups)
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.second_index, ref.second_index)
    np.testing.assert_allclose(got.distance, ref.distance, rtol=1e-9)
    np.testing.assert_allclose(got.second, ref.second, rtol=1e-9)
    np.testing.assert_array_equal(got.key_index, ref.key_index)
    np.testing.assert_allclose(got.key_distance, ref.key_distance, rtol=1e-9)
    np.testing.assert_allclose(got.key_pooled, ref.key_pooled, rtol=1e-6)
    # bins of <= 16 keys: classes 0-1 (5 keys, 12 queries), class 2 alone (20 keys, by blocks of 6), classes 3-5
    # (10 keys, 18 queries): 1+1, 1+4, 1+2 passes of 16; every image but class 2's targets is embedded once
    # (block by block over everything, chunks of 16 queries re-embedded the keys of every class they touched: 17 passes)
    assert forwarded == [16] * 10


def test_bench_embed_reports_both_sides_and_their_ratio():
    from ddcs_core.bench_embed import embed_bench

    out = embed_bench("alex", 64, n=8, reps=1, device="cpu")
    (cpu,) = out["results"]
    assert cpu["device"] == "cpu" and cpu["batch"] == 64 and cpu["passes"] == 1
    assert cpu["ours_images_per_s"] > 0 and cpu["bare_images_per_s"] > 0
    assert cpu["ratio"] == pytest.approx(cpu["ours_images_per_s"] / cpu["bare_images_per_s"], rel=1e-2)
    assert [len(v) for v in cpu["seconds"].values()] == [1, 1, 1]
