"""Runs made up on the spot, for the app's tests, benchmark and screenshots.

`build_sample_run` makes a small run whose pools are really evaluated (LPIPS, DDCS, PRDC, FID), from
smooth class-coloured images or, given an LFW-style folder, from real faces with degraded copies of
other photos of the same person standing in for an attack's output. `build_large_run` makes a run of
any size in seconds by drawing the evaluation's assignments at random, for timing the views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ddcs_core import atomic
from ddcs_core.data.images import ImageSet
from ddcs_core.evaluate import EvalConfig, Evaluation, evaluate_sets
from ddcs_core.metrics import ddcs_from_assignment
from ddcs_core.runs import Run, RunStore


def smooth_images(rng: np.random.Generator, n: int, size: int, label: int) -> np.ndarray:
    """n smooth images around a per-class colour field: classes differ, members vary."""
    base = np.random.default_rng(1000 + label).integers(0, 256, (1, 4, 4, 3))
    low = np.clip(base + rng.normal(0, 35, (n, 4, 4, 3)), 0, 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in low])


def _degrade(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A plausible 'reconstruction': blurred, tinted and noisy."""
    pil = Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.3 + 1.5 * strength))
    x = np.asarray(pil).astype(np.float32)
    x = x * (1 - 0.2 * strength) + rng.normal(0, 3 + 14 * strength, x.shape) + rng.normal(0, 8, (1, 1, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def _faces(folder: Path, n_classes: int, per_class: int, size: int) -> tuple[list[str], list[list[np.ndarray]]]:
    """Centre crops of the people with the most photos (needs per_class + 2 each)."""
    people = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (-len(list(p.iterdir())), p.name))
    people = [p for p in people if len(list(p.iterdir())) >= per_class + 2][:n_classes]
    photos = []
    for person in people:
        files = sorted(person.iterdir())
        row = []
        for f in files:
            with Image.open(f) as im:
                w, h = im.size
                c = int(min(w, h) * 0.5)
                box = ((w - c) // 2, (h - c) // 2 + c // 10, (w + c) // 2, (h + c) // 2 + c // 10)
                row.append(np.asarray(im.convert("RGB").crop(box).resize((size, size), Image.BILINEAR)))
        photos.append(row)
    return [p.name for p in people], photos


def build_sample_run(store: RunStore, name: str = "sample", n_classes: int = 3, per_class: int = 6,
                     recon_per_class: int = 5, pools: tuple[str, ...] = ("vanilla", "ngd"), size: int = 32,
                     seed: int = 0, faces: Path | None = None, grids: bool = True, evaluate: bool = True) -> Run:
    """A small, really evaluated run; pool k is k-th best (later pools reach more targets, more closely)."""
    rng = np.random.default_rng(seed)
    if faces is not None:
        names, photos = _faces(Path(faces), n_classes, per_class, size)
        target_imgs = [row[:per_class] for row in photos]
        spare = [row[per_class:] for row in photos]
    else:
        names = [f"class_{c}" for c in range(n_classes)]
        target_imgs = [list(smooth_images(rng, per_class, size, c)) for c in range(n_classes)]
        spare = target_imgs
    images = np.stack([img for row in target_imgs for img in row])
    labels = np.repeat(np.arange(len(names)), per_class).astype(np.int64)
    targets = ImageSet(images, labels, names, [f"{names[c]}/{i:03d}.png" for c in range(len(names)) for i in range(per_class)],
                       "sample-targets")
    run = store.create(name, {"kind": "sample", "seed": seed, "size": size, "faces": str(faces) if faces else None},
                       targets)
    for k, pool in enumerate(pools):
        strength = 0.8 - 0.6 * k / max(1, len(pools) - 1)
        spread = 0.4 + 0.6 * (k + 1) / len(pools)
        out, out_labels = [], []
        for c in range(len(names)):
            reach = max(1, int(round(spread * per_class)))
            for i in range(recon_per_class):
                base = target_imgs[c][int(rng.integers(reach))] if faces is None else spare[c][int(rng.integers(len(spare[c])))]
                out.append(_degrade(base, rng, strength))
                out_labels.append(c)
        recon = ImageSet(np.stack(out), np.array(out_labels, np.int64), names,
                         [f"{pool}/{names[c]}/{i:03d}.png" for i, c in enumerate(out_labels)], f"sample-{pool}")
        run.write_recon(pool, recon, rng.normal(size=(len(recon), 8)).astype(np.float32))
        if evaluate:
            run.write_evaluation(pool, evaluate_sets(targets, recon, EvalConfig(device="cpu")))
        if grids:
            write_grid(run.path / "grids" / f"{pool}.png", recon.images[:16], 4)
    return run


def write_grid(path: Path, images: np.ndarray, columns: int) -> Path:
    """A PNG grid of images (as the transfer step writes its fixed-latent samples)."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = img
    import io

    buf = io.BytesIO()
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST).save(buf, format="PNG")
    return atomic.write_bytes(path, buf.getvalue())


def build_large_run(store: RunStore, name: str = "large", n_targets: int = 10_000, n_classes: int = 100,
                    recon_per_pool: int = 10_000, pools: tuple[str, ...] = ("vanilla", "dual"), size: int = 32,
                    seed: int = 0) -> Run:
    """A run of any size whose evaluations are drawn at random (no LPIPS), to time the views."""
    rng = np.random.default_rng(seed)
    names = [f"class_{c:03d}" for c in range(n_classes)]
    labels = (np.arange(n_targets) % n_classes).astype(np.int64)
    small = rng.integers(0, 256, (n_targets, 8, 8, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(small, -(-size // 8), axis=1), -(-size // 8), axis=2)[:, :size, :size]
    images = np.clip(images + rng.normal(0, 12, images.shape[1:]), 0, 255).astype(np.uint8)  # texture, as photos have
    targets = ImageSet(images, labels, names, [f"{names[l]}/{i:05d}.png" for i, l in enumerate(labels)], "large-targets")
    run = store.create(name, {"kind": "large-synthetic", "seed": seed}, targets)
    for k, pool in enumerate(pools):
        r_labels = rng.integers(0, n_classes, recon_per_pool).astype(np.int64)
        by_class = [np.flatnonzero(labels == c) for c in range(n_classes)]
        assigned = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in r_labels], np.int64)
        dist = rng.uniform(0.05, 0.6, recon_per_pool) / (1 + k)
        recon = ImageSet(images[assigned], r_labels, names, [f"{pool}/{i:05d}.png" for i in range(recon_per_pool)],
                         f"large-{pool}")
        run.write_recon(pool, recon)
        result = ddcs_from_assignment(assigned, dist, n_targets)
        report = {
            "profile": {"name": "synthetic", "net": "none", "size": None, "assignment": "random"},
            "counts": {"targets": n_targets, "reconstructions": recon_per_pool, "target_classes": n_classes,
                       "reconstruction_classes": n_classes},
            "ddcs": result.ddcs, "ddcs_avg": result.ddcs_avg, "matched": result.n_matched,
            "matched_fraction": result.matched_fraction, "exact_copies": 0, "exact_copy_targets": [],
            "prdc": {"k": 3, "coverage": float(rng.uniform(0.2, 0.5)), "precision": None, "recall": None, "density": None,
                     "features": "synthetic"},
            "fid": {"value": float(rng.uniform(20, 60)), "features": "synthetic"},
            "attack_accuracy": None, "knn_distance": None, "notes": ["synthetic evaluation for benchmarks"],
        }
        run.write_evaluation(pool, Evaluation(report, result, targets, recon, assigned, dist))
    return run
