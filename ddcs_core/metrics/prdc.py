"""Precision, recall, density and coverage (Naeem et al. 2020), globally and per class.

Two conventions exist in the model inversion literature, so both are offered and named:

- ``mode="naeem"`` (default): the reference ``prdc`` package (clovaai/generative-evaluation-prdc).
  With real radii r_i (distance to the k-th nearest other real) and fake radii s_j:
  precision = share of fakes inside *any* real ball (d(i, j) < r_i);
  recall = share of reals inside *any* fake ball (d(i, j) < s_j);
  density = (1 / (k * |fake|)) * #{(i, j): d(i, j) < r_i};
  coverage = share of reals whose nearest fake lies inside their ball.
- ``mode="ppa"``: how Plug-and-Play Attacks computes them (metrics/prcd.py, class PRCD,
  read from the forks 4yjo/Plug-and-Play-Bias and RasmusTorp/Plug_and_Play_Attacks; the call
  site is LukasStruppek/Plug-and-Play-Attacks attack.py). Same radii, but:
  precision checks only the ball of each fake's *nearest* real (d(i*, j) <= r_i*), not any ball;
  recall checks only the ball of each real's *nearest* fake (d(i, j*) <= s_j*);
  density divides the pair count by k * |real| instead of k * |fake|
  (so it equals naeem's density times |fake| / |real|, up to ties);
  all comparisons are ``<=`` instead of ``<`` (this alone is what changes coverage).
  Nearest-neighbour ties go to the lowest index. Not reproduced: PPA's ``if cls:`` skips the
  class filter for class 0 (that class is then scored on the whole datasets); here every class
  is scored on its own samples.
"""

import numpy as np
from scipy.spatial.distance import cdist

from ddcs_core.choices import PRDC_MODES
from ddcs_core.errors import DDCSInputError



def _features(x: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(x)
    if f.ndim != 2:
        raise DDCSInputError(f"{name}: expected a 2-D (samples, features) array, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise DDCSInputError(f"{name}: expected real numbers, got dtype {f.dtype}")
    f = f.astype(np.float64, copy=False)
    if not np.isfinite(f).all():
        raise DDCSInputError(f"{name}: contains NaN or infinite values")
    return f


def _check_k(nearest_k: int) -> int:
    if isinstance(nearest_k, bool) or not isinstance(nearest_k, (int, np.integer)) or nearest_k < 1:
        raise DDCSInputError(f"nearest_k: expected an integer >= 1, got {nearest_k!r}")
    return int(nearest_k)


def _check_mode(mode: str) -> str:
    if mode not in PRDC_MODES:
        raise DDCSInputError(f"mode: expected one of {PRDC_MODES}, got {mode!r}")
    return mode


def _radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each sample to its k-th nearest other sample (position k counts itself at 0)."""
    return np.partition(cdist(features, features), k, axis=1)[:, k]


def _prdc(real: np.ndarray, fake: np.ndarray, k: int, mode: str) -> dict[str, float]:
    r_real, r_fake = _radii(real, k), _radii(fake, k)
    d = cdist(real, fake)  # (real, fake)
    if mode == "naeem":
        in_real_ball = d < r_real[:, None]
        return {
            "precision": float(in_real_ball.any(axis=0).mean()),
            "recall": float((d < r_fake[None, :]).any(axis=1).mean()),
            "density": float(in_real_ball.sum() / (k * fake.shape[0])),
            "coverage": float((d.min(axis=1) < r_real).mean()),
        }
    nn_real = d.argmin(axis=0)
    nn_fake = d.argmin(axis=1)
    d_fake_nn = d[nn_real, np.arange(fake.shape[0])]
    d_real_nn = d[np.arange(real.shape[0]), nn_fake]
    return {
        "precision": float((d_fake_nn <= r_real[nn_real]).mean()),
        "recall": float((d_real_nn <= r_fake[nn_fake]).mean()),
        "density": float((d <= r_real[:, None]).sum() / (k * real.shape[0])),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }


def prdc(real_features: np.ndarray, fake_features: np.ndarray, nearest_k: int = 3,
         mode: str = "naeem") -> dict[str, float]:
    """Precision, recall, density, coverage of fake features against real ones (Euclidean).

    Args:
        real_features: (N, D) features of the real (target) samples, N > nearest_k.
        fake_features: (M, D) features of the fakes (reconstructions), M > nearest_k.
        nearest_k: k of the k-NN radii.
        mode: "naeem" (the prdc package) or "ppa" (Plug-and-Play Attacks); see the module docstring.

    Returns:
        {"precision", "recall", "density", "coverage"} as floats.

    Raises:
        DDCSInputError: malformed features, different dimensions, too few samples, a bad k or mode.
    """
    k = _check_k(nearest_k)
    real = _features(real_features, "real_features")
    fake = _features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise DDCSInputError(
            f"fake_features: feature dimension {fake.shape[1]} differs from real_features' {real.shape[1]}"
        )
    for name, f in (("real_features", real), ("fake_features", fake)):
        if f.shape[0] <= k:
            raise DDCSInputError(f"{name}: needs more than nearest_k={k} samples, got {f.shape[0]}")
    return _prdc(real, fake, k, _check_mode(mode))


def _labels(labels: np.ndarray, n: int, name: str, features_name: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DDCSInputError(f"{name}: expected shape ({n},) to match {features_name}, got {lab.shape}")
    return lab


def prdc_per_class(real_features: np.ndarray, real_labels: np.ndarray, fake_features: np.ndarray,
                   fake_labels: np.ndarray, nearest_k: int = 3, mode: str = "naeem") -> dict:
    """PRDC within each class, then averaged over classes (how MI attacks report it).

    A class is evaluated when it has more than nearest_k real and more than nearest_k fake
    samples; the others cannot have k-NN radii and are listed under "skipped_classes".

    Args:
        real_features: (N, D) features of the real (target) samples.
        real_labels: (N,) their classes.
        fake_features: (M, D) features of the fakes (reconstructions).
        fake_labels: (M,) their classes.
        nearest_k: k of the k-NN radii.
        mode: "naeem" or "ppa", as in `prdc`.

    Returns:
        The four class-averaged metrics, plus "n_classes", "skipped_classes" and "per_class"
        ({label: the four metrics}).

    Raises:
        DDCSInputError: malformed inputs, or no class with more than nearest_k samples in both sets.
    """
    k = _check_k(nearest_k)
    mode = _check_mode(mode)
    real = _features(real_features, "real_features")
    fake = _features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise DDCSInputError(
            f"fake_features: feature dimension {fake.shape[1]} differs from real_features' {real.shape[1]}"
        )
    rl = _labels(real_labels, real.shape[0], "real_labels", "real_features")
    fl = _labels(fake_labels, fake.shape[0], "fake_labels", "fake_features")

    per_class, skipped = {}, []
    for label in np.union1d(rl, fl).tolist():
        in_real, in_fake = rl == label, fl == label
        if in_real.sum() > k and in_fake.sum() > k:
            per_class[label] = _prdc(real[in_real], fake[in_fake], k, mode)
        else:
            skipped.append(label)
    if not per_class:
        raise DDCSInputError(
            f"real_labels/fake_labels: no class has more than nearest_k={k} samples in both sets"
        )
    means = {m: float(np.mean([c[m] for c in per_class.values()]))
             for m in ("precision", "recall", "density", "coverage")}
    return {**means, "n_classes": len(per_class), "skipped_classes": skipped, "per_class": per_class}
