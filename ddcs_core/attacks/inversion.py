"""One Plug-and-Play inversion of a victim with one generator, resumable class by class.

initial selection (one shared search pool) → per class: optimisation (in chunks of `batch_size`
latents) → final selection. Every class draws from seeds of its own (`class_seed`), so a class's
result does not depend on the other classes, on where an interruption fell, or on how many ranks
share the classes. With a `work_dir`, every optimised chunk and every finished class are saved
atomically, so a killed inversion resumes at the first unfinished chunk of the unfinished classes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ddcs_core import distributed
from ddcs_core.attacks.augment import AugmentConfig
from ddcs_core.attacks.losses import IDENTITY_LOSSES
from ddcs_core.attacks.optimize import optimize_latents
from ddcs_core.attacks.selection import final_selection, initial_selection, transform_scores
from ddcs_core.control import Cancelled, Report, ShouldStop
from ddcs_core.data.images import ImageSet
from ddcs_core.data.transforms import to_uint8
from ddcs_core.errors import DDCSInputError, config_from_dict
from ddcs_core.hashing import module_digest
from ddcs_core.models.checkpoints import load_training_state, save_training_state
from ddcs_core.models.stylegan2 import Generator


@dataclass(frozen=True)
class InversionConfig:
    """Sizes and settings of one inversion; defaults follow PPA's recipe, scaled down."""

    search_size: int = 2000
    candidates_per_class: int = 8
    init_views: int = 2
    truncation_psi: float = 0.7
    steps: int = 40
    lr: float = 0.005
    betas: tuple[float, float] = (0.1, 0.1)
    loss: str = "poincare"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    final_per_class: int = 4
    final_views: int = 16
    final_augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(scale=(0.5, 0.9), shift=0.0))
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("search_size", "candidates_per_class", "init_views", "final_per_class", "final_views", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DDCSInputError(f"inversion.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise DDCSInputError(f"inversion.steps must be an int >= 0, got {self.steps!r}")
        if self.loss not in IDENTITY_LOSSES:
            raise DDCSInputError(f"inversion.loss must be one of {sorted(IDENTITY_LOSSES)}, got {self.loss!r}")
        if not 0 < self.truncation_psi <= 1:
            raise DDCSInputError(f"inversion.truncation_psi must lie in (0, 1], got {self.truncation_psi!r}")
        if self.candidates_per_class > self.search_size:
            raise DDCSInputError("inversion.candidates_per_class must not exceed inversion.search_size")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    @classmethod
    def from_dict(cls, d: dict | None) -> InversionConfig:
        d = config_from_dict(cls, d, "inversion")
        for key in ("augment", "final_augment"):
            if key in d:
                d[key] = AugmentConfig.from_dict(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class AttackResult:
    """Reconstructions with what produced them: labels, W latents, final confidence, provenance."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,)
    latents: np.ndarray  # float32 (N, w_dim)
    confidence: np.ndarray  # float32 (N,) mean target confidence under random transforms
    paths: list[str]  # "<pool>/<class>/<i>" per image

    def image_set(self, class_names: list[str], source: str) -> ImageSet:
        return ImageSet(self.images, self.labels.astype(np.int64), list(class_names), list(self.paths), source)


def dual_pool(first: AttackResult, second: AttackResult) -> AttackResult:
    """The union of two pools (the paper's dual pool: vanilla ∪ transferred), every image kept."""
    if first.latents.shape[1:] != second.latents.shape[1:] or first.images.shape[1:] != second.images.shape[1:]:
        raise DDCSInputError("dual pool: the two pools differ in image or latent shape")
    return AttackResult(
        np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        np.concatenate([first.latents, second.latents]),
        np.concatenate([first.confidence, second.confidence]),
        list(first.paths) + list(second.paths),
    )


def _load_or_none(path: Path, signature: dict) -> dict | None:
    if not path.is_file():
        return None
    state = load_training_state(path)
    if state.get("signature") != signature:
        raise DDCSInputError(f"{path} belongs to a different inversion (config, generator or victim changed); delete {path.parent}")
    return state


def class_seed(seed: int, label: int, part: str) -> int:
    """The seed of one part ("opt-<chunk>", "final") of one class's inversion: a function of the class,
    never of the rank or of which other classes share the run, so any split gives the same pool."""
    digest = hashlib.blake2b(f"{seed}/{label}/{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _invert_class(G: Generator, victim: torch.nn.Module, label: int, w0: torch.Tensor, c: InversionConfig,
                  folder: Path | None, signature: dict, should_stop: ShouldStop | None, name: str) -> dict:
    """Optimise one class's starting latents chunk by chunk (each chunk saved), then its final selection."""
    done = []
    labels = torch.full((len(w0),), label, dtype=torch.int64)
    for i, start in enumerate(range(0, len(w0), c.batch_size)):
        path = folder / f"opt-{i:04d}.pt" if folder else None
        state = _load_or_none(path, signature) if path else None
        if state is None:
            if should_stop is not None and should_stop():
                raise Cancelled(f"inversion {name} cancelled; its finished classes and chunks resume it")
            sl = slice(start, start + c.batch_size)
            w = optimize_latents(G, victim, w0[sl], labels[sl], steps=c.steps, lr=c.lr, betas=c.betas, loss=c.loss,
                                 augment=c.augment, seed=class_seed(c.seed, label, f"opt-{i}")).cpu()
            state = {"signature": signature, "w": w}
            if path:
                save_training_state(path, state)
        done.append(state["w"])
    w = torch.cat(done)
    scores = transform_scores(G, victim, w, labels, augment=c.final_augment, views=c.final_views,
                              batch_size=c.batch_size, seed=class_seed(c.seed, label, "final"))
    keep = torch.from_numpy(final_selection(scores, labels, c.final_per_class))
    images = []
    with torch.no_grad():
        for wb in w[keep].split(c.batch_size):
            images.append(to_uint8(G.synthesis(wb.to(G.const.device), noise_mode="const")))
    return {"signature": signature, "w": w[keep].contiguous(), "score": scores[keep].contiguous(),
            "images": torch.from_numpy(np.concatenate(images))}


def invert(
    G: Generator,
    victim: torch.nn.Module,
    classes: Sequence[int],
    config: InversionConfig,
    *,
    name: str = "pool",
    class_names: Sequence[str] | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    report: Report | None = None,
    should_stop: ShouldStop | None = None,
) -> AttackResult | None:
    """Invert `victim` for every class in `classes` with generator `G` (both on one device, eval mode).

    Classes are independent and seeded per class, so under torchrun they are shared out over the
    ranks (`distributed.my_share`) and the pool equals a single process's. Each rank keeps its
    finished classes (and optimised chunks) in `work_dir/class-<label>/`, atomically; the results are
    gathered to rank 0, which alone gets the AttackResult (the other ranks get None).

    Raises control.Cancelled when `should_stop()` turned true; the finished work stays in `work_dir`.
    """
    G, victim = G.eval(), victim.eval()
    c = config
    classes = [int(k) for k in classes]
    if not classes:
        raise DDCSInputError("classes is empty: nothing to attack")
    work = Path(work_dir) if work_dir is not None else None
    base = {"config": c.to_dict(), "G": module_digest(G), "victim": module_digest(victim)}
    report = report or (lambda frac, msg: None)
    mine = [classes[i] for i in distributed.my_share([c.candidates_per_class] * len(classes))]
    folders = {k: work / f"class-{k:05d}" if work else None for k in mine}
    signatures = {k: {**base, "class": k} for k in mine}
    parts: dict[int, dict] = {}
    for k in mine:
        state = _load_or_none(folders[k] / "final.pt", signatures[k]) if work else None
        if state is not None:
            parts[k] = state
    todo = [k for k in mine if k not in parts]
    if todo:  # one shared search pool: each class's picks do not depend on which classes are scored with it
        w0, labels, _ = initial_selection(G, victim, todo, c.candidates_per_class, c.search_size,
                                          truncation_psi=c.truncation_psi, augment=c.augment, views=c.init_views,
                                          batch_size=c.batch_size, seed=c.seed, progress=progress)
        report(0.1, f"{name}: initial selection done for {len(todo)} class(es)")
        bar = tqdm(total=len(todo), desc=f"invert {name}", disable=not progress, leave=False)
        for j, k in enumerate(todo):
            parts[k] = _invert_class(G, victim, k, w0[labels == k], c, folders[k], signatures[k], should_stop, name)
            if work:
                save_training_state(folders[k] / "final.pt", parts[k])
            bar.update(1)
            report(0.1 + 0.85 * (j + 1) / len(todo), f"{name}: class {j + 1}/{len(todo)} inverted")
        bar.close()
    gathered = distributed.gather_to_main({k: {key: v for key, v in p.items() if key != "signature"}
                                           for k, p in parts.items()})
    if gathered is None:
        return None
    merged = {k: p for rank_parts in gathered for k, p in rank_parts.items()}
    order = [k for k in classes if k in merged]
    images = np.concatenate([merged[k]["images"].numpy() for k in order])
    y = np.concatenate([np.full(len(merged[k]["w"]), k, np.int64) for k in order])
    counts: dict[int, int] = {}
    paths = []
    for label in y:
        cls = class_names[label] if class_names is not None else str(label)
        paths.append(f"{name}/{cls}/{counts.get(int(label), 0)}")
        counts[int(label)] = counts.get(int(label), 0) + 1
    report(1.0, f"{name}: final selection kept {len(y)} reconstructions")
    return AttackResult(images, y, torch.cat([merged[k]["w"] for k in order]).numpy().astype(np.float32),
                        torch.cat([merged[k]["score"] for k in order]).numpy().astype(np.float32), paths)
