import numpy as np
import pytest

import ddcs_core.metrics.classification as classification
from ddcs_core.errors import DDCSInputError
from ddcs_core.metrics import knn_distance, prediction_confidence, topk_accuracy

LOGITS = np.array([
    [5.0, 1.0, 0.0, 2.0],  # ranking 0, 3, 1, 2
    [0.0, 1.0, 3.0, 2.0],  # ranking 2, 3, 1, 0
    [1.0, 4.0, 3.0, 2.0],  # ranking 1, 2, 3, 0
])


def test_topk_hand_example():
    labels = np.array([0, 3, 0])  # ranks 0, 1, 3
    acc = topk_accuracy(LOGITS, labels, ks=(1, 2, 3, 4))
    assert acc == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0})
    assert all(type(k) is int and type(v) is float for k, v in acc.items())


def test_topk_default_ks_clamp_to_class_count():
    acc = topk_accuracy(LOGITS, np.array([0, 3, 0]))
    assert set(acc) == {1, 5} and acc[5] == 1.0


def test_topk_ties_rank_lower_class_first():
    logits = np.zeros((2, 3))
    assert topk_accuracy(logits, np.array([0, 2]), ks=(1, 2)) == {1: 0.5, 2: 0.5}


def test_topk_matches_argsort():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(200, 10)), rng.integers(0, 10, 200)
    top = np.argsort(-logits, axis=1)
    for k, value in topk_accuracy(logits, labels, ks=(1, 3, 5)).items():
        assert value == pytest.approx((top[:, :k] == labels[:, None]).any(axis=1).mean())


@pytest.mark.parametrize(
    "logits, labels, ks, match",
    [
        (np.zeros(3), [0], (1,), "logits"),
        (np.zeros((2, 3)), [0], (1,), "labels"),
        (np.zeros((2, 3)), [0, 3], (1,), "labels"),
        (np.zeros((2, 3)), [0.0, 1.0], (1,), "labels"),
        (np.zeros((2, 3)), [0, 1], (0,), "ks"),
        (np.zeros((2, 3)), [0, 1], (), "ks"),
        (np.full((2, 3), np.nan), [0, 1], (1,), "logits"),
    ],
)
def test_topk_bad_input_raises(logits, labels, ks, match):
    with pytest.raises(DDCSInputError, match=match):
        topk_accuracy(logits, np.asarray(labels), ks=ks)


def brute_force_knn(rec, rl, priv, pl):
    return np.array([min(np.sum((r - p) ** 2) for p, lab in zip(priv, pl) if lab == y) for r, y in zip(rec, rl)])


def test_knn_hand_example():
    priv = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    out = knn_distance(np.array([[3.0, 0.0], [9.0, 1.0]]), [0, 1], priv, [0, 0, 1])
    np.testing.assert_allclose(out["per_sample"], [9.0, 2.0])
    assert out["mean"] == pytest.approx(5.5) and out["per_sample"].dtype == np.float64


def test_knn_matches_brute_force_with_chunks(monkeypatch):
    monkeypatch.setattr(classification, "_CHUNK_ELEMENTS", 5)
    rng = np.random.default_rng(4)
    rec, rl = rng.normal(size=(30, 6)), rng.integers(0, 3, 30)
    priv, pl = rng.normal(size=(20, 6)), rng.integers(0, 3, 20)
    pl[:3] = [0, 1, 2]
    out = knn_distance(rec, rl, priv, pl)
    np.testing.assert_allclose(out["per_sample"], brute_force_knn(rec, rl, priv, pl), rtol=1e-10)
    assert out["mean"] == pytest.approx(out["per_sample"].mean())


def test_knn_exact_match_is_zero():
    priv = np.random.default_rng(5).normal(size=(4, 3))
    out = knn_distance(priv[[2]], [1], priv, [0, 0, 1, 1])
    assert out["per_sample"][0] == pytest.approx(0.0, abs=1e-12) and out["per_sample"][0] >= 0


@pytest.mark.parametrize(
    "rec, rl, priv, pl, match",
    [
        (np.zeros((2, 3)), [0, 5], np.zeros((2, 3)), [0, 1], "recon_labels"),
        (np.zeros((2, 3)), [0, 1], np.zeros((2, 4)), [0, 1], "private_features"),
        (np.zeros((2, 3)), [0], np.zeros((2, 3)), [0, 1], "recon_labels"),
        (np.zeros((2, 3)), [0, 1], np.zeros((2, 3)), [0], "private_labels"),
        (np.zeros((0, 3)), [], np.zeros((2, 3)), [0, 1], "recon_features"),
        (np.full((2, 3), np.inf), [0, 1], np.zeros((2, 3)), [0, 1], "recon_features"),
    ],
)
def test_knn_bad_input_raises(rec, rl, priv, pl, match):
    with pytest.raises(DDCSInputError, match=match):
        knn_distance(rec, np.asarray(rl), priv, np.asarray(pl))


def test_prediction_confidence_bounds_and_hand_example():
    uniform = prediction_confidence(np.zeros((4, 5)))
    assert uniform["entropy"] == pytest.approx(np.log(5)) and uniform["confidence"] == pytest.approx(0.2)
    sure = prediction_confidence(np.array([[1000.0, 0.0, 0.0]]))  # no overflow: softmax is stabilised
    assert sure["entropy"] == pytest.approx(0.0, abs=1e-12) and sure["confidence"] == pytest.approx(1.0)
    p = np.array([0.7, 0.2, 0.1])
    mixed = prediction_confidence(np.log(p)[None].repeat(2, 0) + 3.0)  # shift-invariant
    assert mixed["entropy"] == pytest.approx(-(p * np.log(p)).sum()) and mixed["confidence"] == pytest.approx(0.7)
    with pytest.raises(DDCSInputError, match="NaN"):
        prediction_confidence(np.array([[np.nan, 0.0]]))
