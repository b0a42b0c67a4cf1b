"""Safe checkpoint IO: models travel as safetensors plus a JSON description of how to rebuild them.

A checkpoint never holds code. `load_model` rebuilds the module from a registry (`ARCHS`) by its
`arch` name and `config`, then loads tensors that were checked for shape, completeness and finite
values, so a corrupt or hostile file is refused with a message naming it instead of being executed
or silently producing garbage. Legacy `.pt`/`.pth` dicts are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import importlib
import io
import json
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ddcs_core import atomic
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import sha256_bytes, sha256_file
from ddcs_core.manifests import read_manifest

ARCHS: dict[str, Callable[..., nn.Module]] = {}
# Modules whose import registers the built-in architectures.
_BUILTIN_MODULES = ("ddcs_core.models.classifiers", "ddcs_core.models.stylegan2", "ddcs_core.models.stylegan2_ada")
FORMAT_VERSION = "1"
MANIFEST_NAME = "manifest.json"
_TORCH_SUFFIXES = (".pt", ".pth")
_MAX_HEADER = 100 * 1024 * 1024


def register(arch_name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make `builder(**config)` loadable by name from checkpoints."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if arch_name in ARCHS and ARCHS[arch_name] is not builder:
            raise ValueError(f"architecture {arch_name!r} is already registered")
        ARCHS[arch_name] = builder
        return builder

    return deco


def _load_builtin_archs() -> None:
    for name in _BUILTIN_MODULES:
        importlib.import_module(name)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{what} must be JSON-serialisable: {e}") from e


def save_model(
    path: str | Path,
    model: nn.Module,
    arch: str,
    config: dict,
    meta: dict | None = None,
    half: bool = False,
) -> str:
    """Write `model`'s state as safetensors (atomically) and return the file's sha256.

    `half=True` stores floating tensors as fp16 to halve the file; they load back in the model's dtype.
    """
    _load_builtin_archs()
    if arch not in ARCHS:
        raise DDCSInputError(f"cannot save {path}: unknown arch {arch!r} (known: {sorted(ARCHS)})")
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        tensors[name] = t.contiguous().clone()
    metadata = {
        "ddcs_format": FORMAT_VERSION,
        "arch": _json(arch, "arch"),
        "config": _json(config, "config"),
        "meta": _json(meta or {}, "meta"),
        "half": _json(bool(half), "half"),
    }
    data = st_save(tensors, metadata=metadata)
    atomic.write_bytes(Path(path), data)
    return sha256_bytes(data)


def _safetensors_metadata(data: bytes) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors blob, or None when the bytes are not safetensors."""
    if len(data) < 10:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def _read_safetensors(path: Path, data: bytes, meta: dict[str, str]) -> tuple[dict, dict[str, torch.Tensor]]:
    missing = [k for k in ("arch", "config") if k not in meta]
    if missing:
        raise DDCSInputError(f"{path}: safetensors file without DDCS metadata {missing}; save it with save_model")
    try:
        info = {k: json.loads(meta[k]) for k in ("arch", "config")}
        info["meta"] = json.loads(meta.get("meta", "{}"))
    except json.JSONDecodeError as e:
        raise DDCSInputError(f"{path}: corrupt metadata JSON ({e})") from e
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for every kind of corruption
        raise DDCSInputError(f"{path}: corrupt safetensors data ({e})") from e
    return info, tensors


def _read_torch(path: Path, data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DDCSInputError(
            f"{path}: refused by torch.load(weights_only=True); pickled checkpoints are never "
            f"unpickled unrestricted ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(obj, dict) or not {"arch", "config", "state_dict"} <= set(obj):
        raise DDCSInputError(f"{path}: a .pt/.pth checkpoint must be a dict with keys arch, config, state_dict, meta")
    sd = obj["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise DDCSInputError(f"{path}: 'state_dict' must map tensor names to tensors")
    if not isinstance(obj["arch"], str) or not isinstance(obj["config"], dict):
        raise DDCSInputError(f"{path}: 'arch' must be a string and 'config' a dict")
    return {"arch": obj["arch"], "config": obj["config"], "meta": obj.get("meta") or {}}, sd


def _short(names: list[str], limit: int = 8) -> str:
    more = f" … (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_model(
    path: str | Path, *, expected_sha256: str | None = None, device: str | torch.device = "cpu",
    check_manifest: bool = True,
) -> tuple[nn.Module, dict]:
    """Rebuild a model from a checkpoint; returns (model in eval mode on `device`, info).

    info holds arch, config, meta, sha256, path, format ("safetensors" or "torch") and verified (the
    sha256 was checked against `expected_sha256` or, when the file lies beside a manifest.json, against
    its entry there: a file in such a folder that the manifest does not list is refused).
    `check_manifest=False` skips the manifest, for a writer replacing the folder's files.
    """
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"checkpoint {path} not found")
    if expected_sha256 is None and check_manifest:
        expected_sha256 = listed_sha256(path)
    data = path.read_bytes()
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise DDCSInputError(f"{path}: sha256 {digest} does not match the expected {expected_sha256}")
    st_meta = _safetensors_metadata(data)
    if st_meta is not None:
        info, tensors = _read_safetensors(path, data, st_meta)
        fmt = "safetensors"
    elif path.suffix.lower() in _TORCH_SUFFIXES:
        info, tensors = _read_torch(path, data)
        fmt = "torch"
    else:
        raise DDCSInputError(
            f"{path} is not a safetensors file; pickled .pt/.pth checkpoints are only read with "
            f"torch.load(weights_only=True) (give them a .pt or .pth suffix)"
        )
    _load_builtin_archs()
    arch, config = info["arch"], info["config"]
    if arch not in ARCHS:
        raise DDCSInputError(f"{path}: unknown arch {arch!r} (known: {sorted(ARCHS)})")
    if not isinstance(config, dict):
        raise DDCSInputError(f"{path}: config must be a dict, got {type(config).__name__}")
    try:
        model = ARCHS[arch](**config)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{path}: cannot build arch {arch!r} from its config ({e})") from e
    _load_checked(path, model, tensors)
    info.update(sha256=digest, path=str(path), format=fmt, verified=expected_sha256 is not None)
    return model.to(device).eval(), info


def _load_checked(path: Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise DDCSInputError(f"{path}: state does not fit the architecture ({'; '.join(parts)})")
    state = {}
    for name, ref in own.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise DDCSInputError(
                f"{path}: tensor {name!r} has shape {tuple(t.shape)}, the architecture expects {tuple(ref.shape)}"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DDCSInputError(f"{path}: tensor {name!r} contains NaN or inf values")
        if t.is_floating_point() != ref.is_floating_point():
            raise DDCSInputError(f"{path}: tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}")
        state[name] = t.to(ref.dtype)
    model.load_state_dict(state, strict=True)


def save_training_state(path: str | Path, state: dict) -> None:
    """Atomically write a resumable training state; it must hold only tensors and plain containers,
    so that `load_training_state` can read it with weights_only=True."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic.write_bytes(Path(path), buf.getvalue())


def load_training_state(path: str | Path) -> dict:
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DDCSInputError(f"training state {path} is unreadable ({e}); delete {path} to start this training over") from e
    if not isinstance(state, dict):
        raise DDCSInputError(f"training state {path} is not a dict; delete {path} to start this training over")
    return state


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states a training loop draws from (its CPU generator, torch's global CPU and CUDA ones)."""
    state = {"gen": generator.get_state(), "cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["gen"])
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _member(directory: Path, name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DDCSInputError(f"manifest entry {name!r} must be a relative path inside {directory}")
    return directory / rel


def write_manifest(
    dir: str | Path, files: dict[str, dict], config: dict, data_fingerprint: str, metrics: dict
) -> Path:
    """Write `dir/manifest.json`: sha256 + size of each listed file (names relative to `dir`) and
    whatever describes how they were made, so a later reader can detect tampering or a stale set."""
    directory = Path(dir)
    entries = {}
    for name, extra in files.items():
        p = _member(directory, name)
        if not p.is_file():
            raise DDCSInputError(f"cannot write manifest: {p} not found")
        entries[name] = {**(extra or {}), "sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {
        "format": FORMAT_VERSION,
        "files": entries,
        "config": config,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics,
    }
    try:
        return atomic.write_json(directory / MANIFEST_NAME, manifest)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"manifest for {directory} is not JSON-serialisable: {e}") from e


def listed_sha256(path: str | Path) -> str | None:
    """The sha256 that the manifest.json beside `path` lists for it; None when there is no manifest.

    A manifest vouches for a folder: a checkpoint in it that the manifest does not list is refused
    rather than loaded unverified.
    """
    path = Path(path)
    mpath = path.parent / MANIFEST_NAME
    if not mpath.is_file():
        return None
    try:
        files = json.loads(mpath.read_text(encoding="utf-8")).get("files")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise DDCSInputError(f"manifest {mpath} is unreadable ({e}); cannot verify {path}") from e
    entry = files.get(path.name) if isinstance(files, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise DDCSInputError(f"{path} is not listed in {mpath}, so it cannot be verified; re-export the folder "
                             "(`python -m ddcs_core demo build`) or move the file out of it")
    return entry["sha256"]


def verify_manifest(dir: str | Path) -> dict:
    """Check every file listed in `dir/manifest.json`; return the manifest or raise naming the bad file."""
    directory = Path(dir)
    mpath = directory / MANIFEST_NAME
    manifest, files = read_manifest(mpath)
    for name, entry in files.items():
        p = _member(directory, name)
        if not p.is_file():
            raise DDCSInputError(f"{p} listed in {mpath} is missing")
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise DDCSInputError(f"manifest {mpath}: entry {name!r} has no sha256")
        if ("size" in entry and p.stat().st_size != entry["size"]) or sha256_file(p) != entry["sha256"]:
            raise DDCSInputError(f"{p} does not match its sha256 in {mpath} (modified or corrupt)")
    return manifest
