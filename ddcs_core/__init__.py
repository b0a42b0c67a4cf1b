"""DDCS Explorer engine: sample-level evaluation and generation of model inversion attacks.

The public Python API, importable from the package itself::

    from ddcs_core import EvalConfig, evaluate

    ev = evaluate("private/", "reconstructions/", "out/", EvalConfig(profile="fast"))
    print(ev.report["ddcs"], ev.report["prdc"]["coverage"])

Evaluation
    `evaluate` (folders or .npz files in, report.json / targets.csv / evaluation.npz out, as the
    `ddcs evaluate` command), `evaluate_sets` (in-memory `ImageSet`s in, nothing written),
    `EvalConfig`, `Evaluation`.
Metrics (pure functions over NumPy arrays)
    `ddcs`, `ddcs_from_assignment`, `DDCSResult`, `prdc`, `prdc_per_class`, `fid`,
    `frechet_distance`, `feature_stats`, `topk_accuracy`, `knn_distance`, `prediction_confidence`.
Perceptual distance and images
    `PerceptualDistance` (LPIPS with offline weights), `load_images`, `ImageSet`.
Run store
    `RunStore`, `Run`.
Errors
    `DDCSInputError`: every user mistake (a bad file, folder or argument), with a one-line message.

Each name is imported on first use, so `import ddcs_core` loads neither torch nor gradio. The name
`evaluate` is the function: the module that defines it stays importable as
`from ddcs_core.evaluate import ...` or `importlib.import_module("ddcs_core.evaluate")`.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "evaluate": "ddcs_core.evaluate",
    "evaluate_sets": "ddcs_core.evaluate",
    "EvalConfig": "ddcs_core.evaluate",
    "Evaluation": "ddcs_core.evaluate",
    "ddcs": "ddcs_core.metrics.ddcs",
    "ddcs_from_assignment": "ddcs_core.metrics.ddcs",
    "DDCSResult": "ddcs_core.metrics.ddcs",
    "prdc": "ddcs_core.metrics.prdc",
    "prdc_per_class": "ddcs_core.metrics.prdc",
    "fid": "ddcs_core.metrics.fid",
    "frechet_distance": "ddcs_core.metrics.fid",
    "feature_stats": "ddcs_core.metrics.fid",
    "topk_accuracy": "ddcs_core.metrics.classification",
    "knn_distance": "ddcs_core.metrics.classification",
    "prediction_confidence": "ddcs_core.metrics.classification",
    "PerceptualDistance": "ddcs_core.perceptual.pairwise",
    "load_images": "ddcs_core.data.images",
    "ImageSet": "ddcs_core.data.images",
    "RunStore": "ddcs_core.runs",
    "Run": "ddcs_core.runs",
    "DDCSInputError": "ddcs_core.errors",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """Keeps `ddcs_core.evaluate` the function: importing a submodule normally binds its name on the
    package, which would replace the API function by the module of the same name."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
