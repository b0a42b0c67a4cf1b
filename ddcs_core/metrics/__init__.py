"""Pure metric functions over distances and features: DDCS beside the standard MI metrics."""

from ddcs_core.metrics.classification import knn_distance, prediction_confidence, topk_accuracy
from ddcs_core.metrics.ddcs import DDCSResult, ddcs, ddcs_from_assignment
from ddcs_core.metrics.fid import feature_stats, fid, frechet_distance
from ddcs_core.metrics.prdc import prdc, prdc_per_class

__all__ = [
    "DDCSResult",
    "ddcs",
    "ddcs_from_assignment",
    "feature_stats",
    "fid",
    "frechet_distance",
    "knn_distance",
    "prdc",
    "prdc_per_class",
    "prediction_confidence",
    "topk_accuracy",
]
