"""Label-level attack metrics: evaluation-classifier accuracy, feature-space KNN distance, and how sure
a classifier is of unlabelled images (what the entropy loss of transfer learning drives)."""

from collections.abc import Iterable

import numpy as np

from ddcs_core.errors import DDCSInputError

_CHUNK_ELEMENTS = 1 << 22  # bounds each (reconstructions x private) block to ~32 MB of float64


def _real_2d(x: np.ndarray, name: str, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise DDCSInputError(f"{name}: expected a 2-D ({what}) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise DDCSInputError(f"{name}: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise DDCSInputError(f"{name}: contains NaN or infinite values")
    return a


def _labels(labels: np.ndarray, n: int, name: str, other: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DDCSInputError(f"{name}: expected shape ({n},) to match {other}, got {lab.shape}")
    return lab


def prediction_confidence(logits: np.ndarray) -> dict[str, float]:
    """Mean softmax entropy (nats; log C = uniform) and mean top-1 probability over the samples: how sure
    the classifier is of images that carry no label, e.g. a generator's samples before and after transfer.

    Args:
        logits: (N, C) classifier outputs.

    Returns:
        {"entropy": mean softmax entropy in nats, "confidence": mean top-1 probability}.

    Raises:
        DDCSInputError: logits that are not a non-empty, finite 2-D real array.
    """
    z = _real_2d(logits, "logits", "samples, classes")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise DDCSInputError(f"logits: needs at least one sample and one class, got shape {z.shape}")
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    return {"entropy": float(-(p * logp).sum(axis=1).mean()), "confidence": float(p.max(axis=1).mean())}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Share of samples whose label is among the k highest logits, for each k (k > C means C).

    Ties rank the lower class index first, as argmax does, so equal logits never inflate accuracy.

    Args:
        logits: (N, C) classifier outputs, e.g. the evaluation model's on the reconstructions.
        labels: (N,) integer class index each sample should be recognised as.
        ks: the k values to report.

    Returns:
        {k: accuracy in [0, 1]} for each k.

    Raises:
        DDCSInputError: malformed logits, labels outside [0, C) or a k that is not a positive integer.
    """
    z = _real_2d(logits, "logits", "samples, classes")
    n, n_classes = z.shape
    if n == 0 or n_classes == 0:
        raise DDCSInputError(f"logits: needs at least one sample and one class, got shape {z.shape}")
    y = _labels(labels, n, "labels", "logits' first axis")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise DDCSInputError(f"labels: expected integer class indices in [0, {n_classes}), got {y.dtype}")
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise DDCSInputError(f"ks: expected positive integers, got {ks!r}")

    own = z[np.arange(n), y][:, None]
    before = (np.arange(n_classes)[None, :] < y[:, None])
    rank = (z > own).sum(axis=1) + ((z == own) & before).sum(axis=1)
    return {int(k): float((rank < min(int(k), n_classes)).mean()) for k in ks}


def _min_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of a, the min squared L2 distance to the rows of b, in bounded-size blocks."""
    b_sq = np.einsum("ij,ij->i", b, b)
    rows = max(1, _CHUNK_ELEMENTS // b.shape[0])
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], rows):
        block = a[start:start + rows]
        sq = np.einsum("ij,ij->i", block, block)[:, None] + b_sq[None, :] - 2.0 * block @ b.T
        out[start:start + rows] = sq.min(axis=1)
    return np.maximum(out, 0.0)


def knn_distance(recon_features: np.ndarray, recon_labels: np.ndarray, private_features: np.ndarray,
                 private_labels: np.ndarray) -> dict:
    """Min squared L2 feature distance of each reconstruction to the private samples of its class.

    Args:
        recon_features: (N, D) features of the reconstructions (e.g. the evaluation model's penultimate layer).
        recon_labels: (N,) class of each reconstruction.
        private_features: (M, D) features of the private (training) samples.
        private_labels: (M,) class of each private sample.

    Returns:
        {"mean": float, "per_sample": (N,) float64}.

    Raises:
        DDCSInputError: malformed arrays, different feature dimensions, or a reconstruction class
            without private samples.
    """
    rec = _real_2d(recon_features, "recon_features", "reconstructions, features")
    priv = _real_2d(private_features, "private_features", "private samples, features")
    if rec.shape[0] == 0:
        raise DDCSInputError("recon_features: there are no reconstructions")
    if rec.shape[1] != priv.shape[1]:
        raise DDCSInputError(
            f"private_features: feature dimension {priv.shape[1]} differs from recon_features' {rec.shape[1]}"
        )
    rl = _labels(recon_labels, rec.shape[0], "recon_labels", "recon_features")
    pl = _labels(private_labels, priv.shape[0], "private_labels", "private_features")
    missing = np.setdiff1d(rl, pl)
    if missing.size:
        shown = ", ".join(map(str, missing[:10].tolist()))
        raise DDCSInputError(f"recon_labels: {missing.size} class(es) have no private samples ({shown})")

    per_sample = np.empty(rec.shape[0])
    for label in np.unique(rl):
        in_class = rl == label
        per_sample[in_class] = _min_sq_dist(rec[in_class], priv[pl == label])
    return {"mean": float(per_sample.mean()), "per_sample": per_sample}
