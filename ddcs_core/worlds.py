"""What an experiment attacks (victim, pre-trained G and D, evaluator, private targets, public images),
loaded from the config's `world` section by the loader its `kind` names.

`demo` is the shipped demo world (checkpoints/demo, sha256-checked, on its LFW split); `custom` is the
user's own (StyleGAN2-ADA pickles, torchvision or face victims, image folders: custom_world.py). Other
loaders register themselves with `register_world(kind, loader)`; the config refuses a kind without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError

if TYPE_CHECKING:
    from ddcs_core.config import WorldConfig


@dataclass
class AttackWorld:
    """What an experiment attacks with: victim, pre-trained G and D, evaluator, data.

    `evaluator` is the loaded evaluation classifier when the world has one (custom worlds); else the
    evaluation loads the checkpoint at `evaluator_path`. `generator_class` is the class a conditional
    generator is conditioned on (re-applied to the transferred generators)."""

    victim: torch.nn.Module
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    evaluator_path: str
    targets: ImageSet
    public: np.ndarray
    provenance: dict
    evaluator: torch.nn.Module | None = None
    generator_class: int | None = None


WorldLoader = Callable[["WorldConfig", torch.device, bool], AttackWorld]


def load_demo_world(config: WorldConfig, device: torch.device, progress: bool = True) -> AttackWorld:
    """The shipped demo world (sha256-verified) and its LFW split: private_train are the targets."""
    from ddcs_core import pipeline

    if config.roles():
        raise DDCSInputError(f"world: kind 'demo' takes every model and data set from world.folder; "
                             f"{sorted(config.roles())} are for loaders of imported models")
    folder = Path(config.folder)
    if not folder.is_absolute():
        folder = pipeline.REPO / folder
    world = pipeline.load_world(folder, device=device)
    data = pipeline.demo_data(world.manifest.get("config"), config.data_root, progress)
    if data.fingerprint != world.manifest.get("data_fingerprint"):
        raise DDCSInputError(f"{folder}: the LFW data under the data root differ from those the world was built on")
    provenance = {"folder": str(config.folder), "data_fingerprint": data.fingerprint,
                  "files": {k: v["sha256"] for k, v in world.manifest["files"].items()}}
    return AttackWorld(world.victim, world.generator, world.discriminator, str(folder / pipeline.FILES["evaluator"]),
                       data["private_train"], data["public"].images, provenance)


def _load_custom_world(config: WorldConfig, device: torch.device, progress: bool = True) -> AttackWorld:
    from ddcs_core.custom_world import load_custom_world

    return load_custom_world(config, device, progress)


WORLD_LOADERS: dict[str, WorldLoader] = {"demo": load_demo_world, "custom": _load_custom_world}


def register_world(kind: str, loader: WorldLoader) -> None:
    """Make `world.kind: <kind>` load with `loader(world_config, device, progress)`."""
    WORLD_LOADERS[kind] = loader


def load_world(config: WorldConfig, device: torch.device, progress: bool = True) -> AttackWorld:
    """The world a config's `world` section names."""
    if config.kind not in WORLD_LOADERS:
        raise DDCSInputError(f"world.kind {config.kind!r} has no loader (known: {', '.join(WORLD_LOADERS)})")
    return WORLD_LOADERS[config.kind](config, device, progress)
