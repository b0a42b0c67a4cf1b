import numpy as np
import pytest

from ddcs_core.errors import DDCSInputError
from ddcs_core.metrics import feature_stats, fid, frechet_distance


def eig_reference(a, b):
    """FID via Tr((S1 S2)^1/2) = sum of square roots of the eigenvalues of S1 S2."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eig = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def test_feature_stats_float64_unbiased():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    mu, sigma = feature_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))


@pytest.mark.parametrize("n_a, n_b, dim", [(200, 150, 6), (60, 90, 12), (40, 40, 1)])
def test_matches_eigenvalue_reference(n_a, n_b, dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n_a, dim))
    b = rng.normal(0.5, 1.5, size=(n_b, dim)) @ rng.normal(size=(dim, dim))
    assert fid(a, b) == pytest.approx(eig_reference(a, b), rel=1e-6)


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).normal(size=(100, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_mean_gives_squared_shift():
    x = np.random.default_rng(1).normal(size=(100, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 10)), rng.normal(size=(6, 10))
    value = fid(a, b)
    assert np.isfinite(value) and value == pytest.approx(eig_reference(a, b), abs=1e-3)


def test_frechet_distance_from_stats():
    mu, sigma = np.zeros(2), np.eye(2)
    assert frechet_distance(mu, sigma, mu + 1.0, 4 * np.eye(2)) == pytest.approx(2 + 2 + 8 - 2 * 2 * 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fid(np.zeros((5, 3)), np.zeros((5, 4))), "features_b"),
        (lambda: fid(np.zeros((1, 3)), np.zeros((5, 3))), "features_a"),
        (lambda: fid(np.zeros(5), np.zeros((5, 3))), "features_a"),
        (lambda: fid(np.zeros((5, 3)), np.full((5, 3), np.nan)), "features_b"),
        (lambda: feature_stats(np.zeros((1, 3))), "at least 2"),
        (lambda: frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "mu2"),
        (lambda: frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "sigma1"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(DDCSInputError, match=match):
        call()
