"""Fréchet distance between Gaussian fits of two feature sets (FID when the features are Inception's).

Which feature extractor produced the features is the caller's to state; this module only does the
statistics, in float64 so that small feature sets do not lose precision.
"""

import warnings

import numpy as np
from scipy import linalg

from ddcs_core.errors import DDCSInputError

_EPS = 1e-6
_IMAG_TOL = 1e-3


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, N >= 2.

    Args:
        features: (N, D) real features, N >= 2.

    Returns:
        (mu, sigma): float64 mean (D,) and covariance (D, D).

    Raises:
        DDCSInputError: not a finite 2-D real array, or fewer than 2 samples.
    """
    return _stats(features, "features")


def _stats(features: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features)
    if f.ndim != 2:
        raise DDCSInputError(f"{name}: expected a 2-D (samples, features) array, got shape {f.shape}")
    if f.shape[0] < 2:
        raise DDCSInputError(f"{name}: a covariance needs at least 2 samples, got {f.shape[0]}")
    if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise DDCSInputError(f"{name}: expected real numbers, got dtype {f.dtype}")
    f = f.astype(np.float64, copy=False)
    if not np.isfinite(f).all():
        raise DDCSInputError(f"{name}: contains NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _check_stats(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DDCSInputError(
            f"mu{name}/sigma{name}: expected shapes (D,) and (D, D), got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DDCSInputError(f"mu{name}/sigma{name}: contain NaN or infinite values")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    A singular product (fewer samples than dimensions) gets the usual eps * I offset on both
    covariances; imaginary parts from round-off are dropped, large ones are an error.

    Args:
        mu1, sigma1: mean (D,) and covariance (D, D) of the first set (see `feature_stats`).
        mu2, sigma2: the same of the second set.

    Returns:
        The Fréchet distance (float, >= 0 up to round-off).

    Raises:
        DDCSInputError: mismatched or non-finite statistics, or a square root too far from real.
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise DDCSInputError(f"mu2: feature dimension {mu2.shape[0]} differs from mu1's {mu1.shape[0]}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled just below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * _EPS
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.abs(np.diagonal(covmean).imag).max()
        if largest > _IMAG_TOL:
            raise DDCSInputError(
                f"sigma1/sigma2: matrix square root has an imaginary component of {largest:.3g}; "
                "the covariances are too ill-conditioned (use more samples or fewer dimensions)"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of two (N, D) feature sets.

    Args:
        features_a: (N, D) features of one set (e.g. the targets), N >= 2.
        features_b: (M, D) features of the other (e.g. the reconstructions), M >= 2.

    Returns:
        The distance; FID proper when the features are Inception-v3 pool3.

    Raises:
        DDCSInputError: malformed sets or different feature dimensions (see `feature_stats`).
    """
    mu1, sigma1 = _stats(features_a, "features_a")
    mu2, sigma2 = _stats(features_b, "features_b")
    if mu1.shape != mu2.shape:
        raise DDCSInputError(
            f"features_b: feature dimension {mu2.shape[0]} differs from features_a's {mu1.shape[0]}"
        )
    return frechet_distance(mu1, sigma1, mu2, sigma2)
