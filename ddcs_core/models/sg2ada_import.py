"""Imported StyleGAN2-ADA networks on disk: convert a pickle to our safetensors folder, load either, sample.

An imported folder holds `G.safetensors`, `G_ema.safetensors`, `D.safetensors` (those the pickle had),
`config.json` (constructor arguments, source file and its sha256) and `manifest.json` (sha256 of every
file), so later loads read no pickle at all and detect a modified file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddcs_core import atomic
from ddcs_core.errors import DDCSInputError
from ddcs_core.models import stylegan2_ada as sg
from ddcs_core.models.checkpoints import MANIFEST_NAME, load_model, save_model, verify_manifest, write_manifest
from ddcs_core.models.network_pickle import NETWORK_KEYS, load_network_pickle

CONFIG_NAME = "config.json"
_PICKLE_MAGIC = b"\x80"


def _is_pickle(path: Path) -> bool:
    if path.suffix.lower() == ".pkl":
        return True
    with open(path, "rb") as f:
        return f.read(1) == _PICKLE_MAGIC


def import_network_pickle(pkl: str | Path, out: str | Path) -> dict:
    """Convert `pkl` into the folder `out` (which must not hold files yet); returns config.json's content."""
    pkl, out = Path(pkl), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DDCSInputError(f"--out {out} already exists and is not an empty folder; choose a new folder")
    nets = load_network_pickle(pkl)
    files, config = {}, {"format": "stylegan2-ada", "source": pkl.name, "source_sha256": nets.sha256,
                         "training_set_kwargs": nets.training_set_kwargs, "ignored": nets.extras, "networks": {}}
    out.mkdir(parents=True, exist_ok=True)
    for key in NETWORK_KEYS:
        net = getattr(nets, key)
        if net is None:
            continue
        name = f"{key}.safetensors"
        sha = save_model(out / name, net, net.arch, net.config, meta={"source": pkl.name, "network": key})
        files[name] = {"arch": net.arch, "network": key}
        config["networks"][key] = {"file": name, "arch": net.arch, "sha256": sha, "config": net.config}
    if "G_ema" not in config["networks"] and "G" not in config["networks"]:
        raise DDCSInputError(f"{pkl}: holds no generator (G or G_ema)")
    atomic.write_json(out / CONFIG_NAME, config)
    files[CONFIG_NAME] = {}
    write_manifest(out, files, {"source": pkl.name}, nets.sha256, {})
    return config


def _from_folder(folder: Path, key: str) -> nn.Module:
    verify_manifest(folder)
    path = folder / f"{key}.safetensors"
    if not path.is_file():
        raise DDCSInputError(f"{folder} holds no {key} network ({path.name} missing)")
    model, _ = load_model(path)
    return model


def load_network(path: str | Path, key: str = "G_ema", device: str | torch.device = "cpu") -> nn.Module:
    """G_ema / G / D from a network pickle, an imported folder or one of its safetensors files."""
    if key not in NETWORK_KEYS:
        raise ValueError(f"key must be one of {NETWORK_KEYS}")
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise DDCSInputError(f"{path} is not an imported network folder (no {MANIFEST_NAME}); "
                                 "run `python -m ddcs_core generator import PKL --out DIR` first")
        net = _from_folder(path, key)
    elif not path.is_file():
        raise DDCSInputError(f"{path} not found")
    elif _is_pickle(path):
        net = getattr(load_network_pickle(path, keys=(key,)), key)
        if net is None:
            raise DDCSInputError(f"{path} holds no {key} network")
    else:
        net, _ = load_model(path)
    want = sg.Discriminator if key == "D" else sg.Generator
    if not isinstance(net, want):
        raise DDCSInputError(f"{path}: holds a {type(net).__name__}, not a StyleGAN2-ADA {want.__name__}")
    return net.to(device).eval()


def read_latents(path: str | Path, z_dim: int) -> np.ndarray:
    """Z.npy as float32 (N, z_dim), refused with the expected shape otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"--latents {path} not found")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DDCSInputError(f"--latents {path} is not a .npy array ({e})") from e
    if z.ndim != 2 or z.shape[1] != z_dim or not len(z) or z.dtype.kind != "f":
        raise DDCSInputError(f"--latents {path} must be float (N, {z_dim}), got {z.dtype} {z.shape}")
    if not np.isfinite(z).all():
        raise DDCSInputError(f"--latents {path} contains NaN or inf")
    return z.astype(np.float32, copy=False)


@torch.no_grad()
def sample(G: sg.Generator, z: np.ndarray, truncation_psi: float = 1.0, noise_mode: str = "const",
           class_index: int | None = None, truncation_cutoff: int | None = None, batch_size: int = 16) -> np.ndarray:
    """G's raw output (float32 NCHW, nominally [-1, 1], not clamped) for latents z (N, z_dim)."""
    if noise_mode not in sg.NOISE_MODES:
        raise DDCSInputError(f"--noise-mode must be one of {sg.NOISE_MODES}, got {noise_mode!r}")
    if G.c_dim == 0 and class_index is not None:
        raise DDCSInputError("--class was given but the generator is unconditional (c_dim = 0)")
    if G.c_dim > 0 and class_index is None:
        raise DDCSInputError(f"the generator is class-conditional ({G.c_dim} classes): pass --class K")
    device = G.const.device
    c = None if class_index is None else sg.one_hot(class_index, G.c_dim)[None].to(device)
    out = []
    for zb in torch.from_numpy(z).split(batch_size):
        zb = zb.to(device)
        cb = None if c is None else c.expand(len(zb), -1)
        out.append(G(zb, c=cb, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                     noise_mode=noise_mode).float().cpu().numpy())
    return np.concatenate(out)


def describe(path: str | Path) -> str:
    """One line about an imported folder's config (for the CLI)."""
    config = json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
    parts = []
    for key, entry in config["networks"].items():
        c = entry["config"]
        parts.append(f"{key} {c['img_resolution']}px c_dim={c['c_dim']}" + (f" z_dim={c['z_dim']}" if "z_dim" in c else ""))
    return "; ".join(parts)
