"""`world.kind: custom`: the user's own generator, discriminator, victim, evaluator and images.

- generator: a StyleGAN2-ADA network pickle (read without running anything in it), a folder written by
  `generator import`, or a generator checkpoint of ours (.safetensors); G_ema is the generator.
- discriminator: default the pickle's (or imported folder's) D; required for a safetensors generator,
  since transfer learning stays adversarial.
- victim / evaluator: models.victims.ClassifierSpec mappings (arch, weights, num_classes, preprocess, ...),
  checked at load time against the generator's resolution.
- private / public: class-folder trees or .npz, decoded at `resolution` (stretched when they differ).
- resolution: defaults to the generator's output size; a different value is refused, so a config that
  says 256 never runs on a 128 px pickle by mistake.
- generator_class: a class-conditional G (and D) is conditioned on this class in every step.
Every file is checked to exist before anything is loaded, naming the `world.<key>` it came from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddcs_core.config import WorldConfig
from ddcs_core.data.images import ImageSet, load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import array_digest, sha256_file
from ddcs_core.worlds import AttackWorld

REQUIRED = ("generator", "victim", "evaluator", "private", "public")


def _exists(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DDCSInputError(f"file not found: world.{key} {p}")
    return p


def check_files(config: WorldConfig) -> None:
    """Every role is given and every file it names exists (before minutes of loading)."""
    if config.data_root is not None:
        raise DDCSInputError("world.data_root is for kind 'demo' (the LFW root); a custom world names "
                             "world.private and world.public")
    missing = [k for k in REQUIRED if getattr(config, k) is None]
    if missing:
        raise DDCSInputError(f"world: kind 'custom' needs {', '.join('world.' + k for k in missing)}")
    for key in ("generator", "discriminator", "private", "public"):
        if getattr(config, key) is not None:
            _exists(getattr(config, key), key)
    for key in ("victim", "evaluator"):
        _exists(getattr(config, key)["weights"], f"{key}.weights")


def _network(path: Path, key: str, device: torch.device) -> torch.nn.Module:
    """G_ema or D from a pickle / imported folder (sg2ada_import), else our own checkpoint."""
    from ddcs_core.models.checkpoints import load_model
    from ddcs_core.models.sg2ada_import import MANIFEST_NAME, _is_pickle, load_network

    if path.is_dir() or _is_pickle(path) or (path.parent / MANIFEST_NAME).is_file():
        return load_network(path, key, device)
    return load_model(path, device=device)[0].eval()


def _generator_pair(config: WorldConfig, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    from ddcs_core.models.sg2ada_import import MANIFEST_NAME, _is_pickle

    g_path = Path(config.generator).expanduser()
    G = _network(g_path, "G_ema", device)
    if config.discriminator is not None:
        d_path = Path(config.discriminator).expanduser()
    elif g_path.is_dir() or _is_pickle(g_path):
        d_path = g_path
    elif (g_path.parent / MANIFEST_NAME).is_file():  # one file of an imported folder
        d_path = g_path.parent
    else:
        raise DDCSInputError(f"world.discriminator: required when world.generator ({g_path}) is a single "
                             "checkpoint file; name the discriminator trained with it")
    D = _network(d_path, "D", device)
    for name, net in (("generator", G), ("discriminator", D)):
        if getattr(net, "img_resolution", None) is None:
            raise DDCSInputError(f"world.{name}: {type(net).__name__} is not a GAN network of a known kind")
    if D.img_resolution != G.img_resolution:
        raise DDCSInputError(f"world.discriminator takes {D.img_resolution} px images but the generator makes "
                             f"{G.img_resolution} px")
    files = {}
    for name, path in (("generator", g_path), ("discriminator", d_path)):
        files[name] = sha256_file(path) if path.is_file() else sha256_file(path / MANIFEST_NAME)
    return G, D, files


def _condition(G: torch.nn.Module, D: torch.nn.Module, k: int | None) -> None:
    c_dim = getattr(G, "c_dim", 0)
    if c_dim and k is None:
        raise DDCSInputError(f"world.generator is class-conditional ({c_dim} classes): set world.generator_class")
    if k is None:
        return
    if not c_dim:
        raise DDCSInputError("world.generator_class: the generator is not class-conditional")
    if k >= c_dim:
        raise DDCSInputError(f"world.generator_class: {k} is not among the generator's {c_dim} classes")
    G.set_class(k)
    if getattr(D, "c_dim", 0):
        D.set_class(k)


def _images(path: str, key: str, size: int, progress: bool) -> ImageSet:
    images = load_images(path, size=size, progress=progress)
    if not len(images):
        raise DDCSInputError(f"world.{key} {path}: no images")
    return images


def load_custom_world(config: WorldConfig, device: torch.device, progress: bool = True) -> AttackWorld:
    """The world a `kind: custom` section names (see the module docstring)."""
    from ddcs_core.models.victims import ClassifierSpec, load_classifier

    check_files(config)
    G, D, files = _generator_pair(config, device)
    res = G.img_resolution
    if config.resolution is not None and config.resolution != res:
        raise DDCSInputError(f"world.resolution is {config.resolution} but world.generator makes {res} px images")
    _condition(G, D, config.generator_class)
    victim = load_classifier(ClassifierSpec.from_dict(config.victim, "world.victim"), device, resolution=res)
    evaluator = load_classifier(ClassifierSpec.from_dict(config.evaluator, "world.evaluator"), device, resolution=res)
    targets = _images(config.private, "private", res, progress)
    public = _images(config.public, "public", res, progress)
    if victim.num_classes != len(targets.class_names):
        raise DDCSInputError(f"world.victim has {victim.num_classes} classes but world.private has "
                             f"{len(targets.class_names)} class folders")
    provenance = {"kind": "custom", "resolution": res, "generator_class": config.generator_class,
                  "files": {**files, "victim": victim.info.get("sha256"), "evaluator": evaluator.info.get("sha256")},
                  "private": array_digest(targets.images), "public": array_digest(public.images)}
    return AttackWorld(victim, G, D, str(config.evaluator["weights"]), targets, public.images, provenance,
                       evaluator=evaluator, generator_class=config.generator_class)
