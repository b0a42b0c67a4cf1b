import numpy as np
import pytest
from prdc import compute_prdc

from ddcs_core.errors import DDCSInputError
from ddcs_core.metrics import prdc, prdc_per_class

KEYS = ("precision", "recall", "density", "coverage")

# 1-D example, k = 1. Real radii: 0 -> 0.1, 0.1 -> 0.1, 5 -> 4.9.
# Fake radii: 1 -> 0.5, 1.5 -> 0.5, 20 -> 18.5, 100 -> 80.
REAL = np.array([[0.0], [0.1], [5.0]])
FAKE = np.array([[1.0], [1.5], [20.0], [100.0]])


@pytest.mark.parametrize("n_real, n_fake, dim, k", [(50, 50, 8, 3), (40, 70, 16, 3), (80, 30, 5, 5), (12, 9, 3, 2)])
def test_naeem_matches_reference_package(n_real, n_fake, dim, k, capsys):
    rng = np.random.default_rng(n_real * 1000 + n_fake)
    real = rng.normal(size=(n_real, dim))
    fake = rng.normal(0.3, 1.2, size=(n_fake, dim))
    expected = compute_prdc(real, fake, nearest_k=k)
    got = prdc(real, fake, nearest_k=k)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-6)
        assert isinstance(got[key], float)


def test_naeem_hand_example():
    got = prdc(REAL, FAKE, nearest_k=1)
    # fakes 1 and 1.5 lie only in the ball of 5 (radius 4.9) -> precision 2/4
    # real 5 lies in the ball of fake 20 (radius 18.5) -> recall 1/3
    # 2 (real, fake) pairs in real balls, / (k * 4 fakes); real 5 alone is covered
    assert got == pytest.approx({"precision": 0.5, "recall": 1 / 3, "density": 0.5, "coverage": 1 / 3})


def test_ppa_hand_example_differs_where_documented():
    got = prdc(REAL, FAKE, nearest_k=1, mode="ppa")
    # precision: each fake's *nearest* real (0.1, 0.1, 5, 5) has it outside its ball -> 0
    # recall: each real's *nearest* fake (1, 1, 1.5) has it outside its ball -> 0
    # density: the same 2 pairs, divided by k * 3 reals; coverage agrees with naeem
    assert got == pytest.approx({"precision": 0.0, "recall": 0.0, "density": 2 / 3, "coverage": 1 / 3})


def test_ppa_counts_boundary_ties():
    real = np.array([[0.0], [1.0], [3.0]])  # radii (k=1): 1, 1, 2
    fake = np.array([[2.0], [10.0], [11.0]])  # fake 2 is exactly on the ball of real 1
    assert prdc(real, fake, nearest_k=1)["coverage"] == pytest.approx(1 / 3)
    assert prdc(real, fake, nearest_k=1, mode="ppa")["coverage"] == pytest.approx(2 / 3)


def test_ppa_density_is_naeem_density_rescaled():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(45, 4))
    naeem, ppa = prdc(real, fake), prdc(real, fake, mode="ppa")
    assert ppa["density"] == pytest.approx(naeem["density"] * 45 / 30)
    assert ppa["coverage"] == pytest.approx(naeem["coverage"])
    assert ppa["precision"] <= naeem["precision"] and ppa["recall"] <= naeem["recall"]


def _classes(rng, counts, dim=4):
    feats = np.concatenate([rng.normal(c, 1.0, size=(n, dim)) for c, n in enumerate(counts)])
    labels = np.repeat(np.arange(len(counts)), counts)
    return feats, labels


@pytest.mark.parametrize("mode", ["naeem", "ppa"])
def test_per_class_averages_evaluated_classes(mode):
    rng = np.random.default_rng(1)
    real, real_labels = _classes(rng, [10, 8, 6])
    fake, fake_labels = _classes(rng, [7, 9, 3])  # class 2 has only 3 fakes: skipped at k=3
    fake, fake_labels = np.vstack([fake, rng.normal(size=(5, 4))]), np.concatenate([fake_labels, [7] * 5])
    out = prdc_per_class(real, real_labels, fake, fake_labels, nearest_k=3, mode=mode)
    assert out["n_classes"] == 2 and out["skipped_classes"] == [2, 7]
    assert set(out["per_class"]) == {0, 1}
    for label in (0, 1):
        expected = prdc(real[real_labels == label], fake[fake_labels == label], 3, mode=mode)
        assert out["per_class"][label] == pytest.approx(expected)
    for key in KEYS:
        assert out[key] == pytest.approx(np.mean([out["per_class"][c][key] for c in (0, 1)]))


def test_per_class_string_labels_are_plain_python():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    labels = np.array(["x"] * 5 + ["y"] * 5)
    out = prdc_per_class(real, labels, fake, labels, nearest_k=2)
    assert list(out["per_class"]) == ["x", "y"] and all(type(k) is str for k in out["per_class"])


def test_per_class_without_any_evaluable_class_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(DDCSInputError, match="nearest_k"):
        prdc_per_class(rng.normal(size=(6, 2)), [0, 0, 0, 1, 1, 1], rng.normal(size=(6, 2)), [0] * 6)


@pytest.mark.parametrize(
    "real, fake, kwargs, match",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, "fake_features"),
        (np.zeros((3, 2)), np.zeros((5, 2)), {}, "real_features"),
        (np.zeros((5, 2)), np.zeros((3, 2)), {}, "fake_features"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "real_features"),
        (np.zeros(5), np.zeros((5, 2)), {}, "real_features"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"nearest_k": 0}, "nearest_k"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"mode": "torch"}, "mode"),
    ],
)
def test_bad_input_raises(real, fake, kwargs, match):
    with pytest.raises(DDCSInputError, match=match):
        prdc(real, fake, **kwargs)


def test_per_class_label_length_mismatch_raises():
    with pytest.raises(DDCSInputError, match="fake_labels"):
        prdc_per_class(np.zeros((5, 2)), [0] * 5, np.zeros((5, 2)), [0] * 4)
