"""One Plug-and-Play inversion of a victim with one generator, resumable chunk by chunk.

initial selection → optimisation (in chunks of `batch_size` latents) → final selection. With a
`work_dir`, the selected starting latents and every optimised chunk are saved atomically, so a
killed inversion resumes at the first unfinished chunk; each chunk draws from its own seed, so the
result does not depend on where the interruption fell.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ddcs_core.attacks.augment import AugmentConfig
from ddcs_core.attacks.fingerprint import module_digest
from ddcs_core.attacks.losses import IDENTITY_LOSSES
from ddcs_core.attacks.optimize import optimize_latents
from ddcs_core.attacks.selection import final_selection, initial_selection, transform_scores
from ddcs_core.control import Cancelled, Report, ShouldStop
from ddcs_core.data.images import ImageSet
from ddcs_core.data.transforms import to_uint8
from ddcs_core.errors import DDCSInputError, config_from_dict
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
) -> AttackResult:
    """Invert `victim` for every class in `classes` with generator `G` (both on one device, eval mode).

    Raises control.Cancelled when `should_stop()` turned true; the finished chunks stay in `work_dir`.
    """
    G, victim = G.eval(), victim.eval()
    c = config
    work = Path(work_dir) if work_dir is not None else None
    signature = {"config": c.to_dict(), "classes": [int(k) for k in classes],
                 "G": module_digest(G), "victim": module_digest(victim)}
    report = report or (lambda frac, msg: None)
    init = _load_or_none(work / "init.pt", signature) if work else None
    if init is None:
        w0, labels, _ = initial_selection(G, victim, classes, c.candidates_per_class, c.search_size,
                                          truncation_psi=c.truncation_psi, augment=c.augment, views=c.init_views,
                                          batch_size=c.batch_size, seed=c.seed, progress=progress)
        init = {"signature": signature, "w": w0, "labels": labels}
        if work:
            save_training_state(work / "init.pt", init)
    w0, labels = init["w"], init["labels"]
    report(0.1, f"{name}: initial selection done ({len(w0)} latents)")
    chunks = list(range(0, len(w0), c.batch_size))
    done: list[torch.Tensor] = []
    bar = tqdm(total=len(chunks), desc=f"invert {name}", disable=not progress, leave=False)
    for i, start in enumerate(chunks):
        path = work / f"opt-{i:04d}.pt" if work else None
        state = _load_or_none(path, signature) if path else None
        if state is None:
            if should_stop is not None and should_stop():
                bar.close()
                raise Cancelled(f"inversion {name} cancelled; its finished chunks resume it")
            sl = slice(start, start + c.batch_size)
            w = optimize_latents(G, victim, w0[sl], labels[sl], steps=c.steps, lr=c.lr, betas=c.betas, loss=c.loss,
                                 augment=c.augment, seed=c.seed * 100003 + 1 + i).cpu()
            state = {"signature": signature, "w": w}
            if path:
                save_training_state(path, state)
        done.append(state["w"])
        bar.update(1)
        report(0.1 + 0.8 * (i + 1) / len(chunks), f"{name}: optimised chunk {i + 1}/{len(chunks)}")
    bar.close()
    w = torch.cat(done)
    scores = transform_scores(G, victim, w, labels, augment=c.final_augment, views=c.final_views,
                              batch_size=c.batch_size, seed=c.seed * 100003)
    keep = final_selection(scores, labels, c.final_per_class)
    w_final, y_final = w[keep], labels[keep]
    images = []
    with torch.no_grad():
        for wb in w_final.split(c.batch_size):
            images.append(to_uint8(G.synthesis(wb.to(G.const.device), noise_mode="const")))
    y = y_final.numpy().astype(np.int64)
    counts: dict[int, int] = {}
    paths = []
    for label in y:
        cls = class_names[label] if class_names is not None else str(label)
        paths.append(f"{name}/{cls}/{counts.get(int(label), 0)}")
        counts[int(label)] = counts.get(int(label), 0) + 1
    report(1.0, f"{name}: final selection kept {len(y)} reconstructions")
    return AttackResult(np.concatenate(images), y, w_final.numpy().astype(np.float32),
                        scores[keep].numpy().astype(np.float32), paths)
