"""Read NVIDIA StyleGAN2-ADA network pickles (`network-snapshot-*.pkl`) without executing anything in them.

Those files are Python pickles whose networks are `torch_utils.persistence` objects: each records the
source code of its module, its class name, constructor arguments and state (parameters, buffers,
submodules), and NVIDIA's loader `exec`s that source. Here a restricted unpickler resolves only the
handful of globals needed to rebuild tensors and plain containers; the persistence hook yields an inert
`PersistentRecord` (the embedded source is never looked at), and every other global — `os.system`,
`builtins.eval`, anything — stops the load with an error naming it. Storages are nested `torch.save`
blobs; they are read with `torch.load(weights_only=True)`. From the records' constructor arguments our
own implementation (`stylegan2_ada`) is built and the tensors are copied in after a check that every
name, class and shape fits; what it cannot represent is refused, naming the feature.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddcs_core.errors import DDCSInputError
from ddcs_core.models import stylegan2_ada as sg
from ddcs_core.hashing import sha256_file
from ddcs_core.models.checkpoints import _load_checked

NETWORK_KEYS = ("G", "D", "G_ema")


@dataclass
class PersistentRecord:
    """What a persistent object recorded about itself; nothing here can run."""

    class_name: str
    state: dict
    version: Any = None

    @property
    def init_kwargs(self) -> dict:
        return self.state.get("_init_kwargs") or {}

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())


class _KwargsDict(dict):
    """Stands in for `dnnlib.util.EasyDict` (a plain dict subclass) while unpickling."""


def _persistent_record(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise DDCSInputError("a persistent object in the pickle has no class name/type 'class' (unknown format)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise DDCSInputError(f"persistent object {meta['class_name']!r} has no state dict")
    return PersistentRecord(meta["class_name"], state, meta.get("version"))


def _storage_from_bytes(data: bytes):
    """A storage's nested `torch.save` blob, read with torch's own weights-only unpickler."""
    if not isinstance(data, (bytes, bytearray)):
        raise DDCSInputError("a tensor storage in the pickle is not a byte string")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        raise DDCSInputError(f"a tensor storage in the pickle was refused by torch's weights-only loader ({e})") from e


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise DDCSInputError(f"a tensor in the pickle is built on {type(storage).__name__}, not a storage")
    if backward_hooks:
        raise DDCSInputError("a tensor in the pickle carries backward hooks (code); refused")
    return torch._utils._rebuild_tensor_v2(storage, int(offset), tuple(size), tuple(stride), False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise DDCSInputError("a parameter in the pickle does not hold a tensor")
    if backward_hooks:
        raise DDCSInputError("a parameter in the pickle carries backward hooks (code); refused")
    return data


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, (bytes, bytearray)):
        raise DDCSInputError(f"a numpy scalar of dtype {dtype!r} in the pickle is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0].item()


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): _KwargsDict,
    ("dnnlib", "EasyDict"): _KwargsDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            hint = (" (a TensorFlow-era StyleGAN pickle; only stylegan2-ada-pytorch pickles are supported)"
                    if module.startswith("dnnlib.tflib") else "")
            raise DDCSInputError(f"{self.source}: refused: the pickle asks for the global {module}.{name}, which a "
                                 f"StyleGAN2-ADA network pickle does not need{hint}; nothing in it was run")
        return target

    def persistent_load(self, pid):
        raise DDCSInputError(f"{self.source}: refused: the pickle uses persistent ids ({str(pid)[:60]!r}); "
                             "it is not a StyleGAN2-ADA network pickle")


def read_network_pickle(path: str | Path) -> dict:
    """The pickle's top-level dict with networks as `PersistentRecord`s; executes nothing."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"network pickle {path} not found")
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f, str(path)).load()
    except DDCSInputError:
        raise
    except Exception as e:  # truncated or malformed streams raise many kinds of errors
        raise DDCSInputError(f"{path}: not a readable network pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not any(isinstance(data.get(k), PersistentRecord) for k in NETWORK_KEYS):
        raise DDCSInputError(f"{path}: not a StyleGAN2-ADA network pickle (expected a dict with G, D and G_ema)")
    return data


def plain(value: Any, where: str) -> Any:
    """Constructor arguments as JSON-ready Python values (EasyDicts → dicts, tuples → lists)."""
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise DDCSInputError(f"unsupported init argument {where} of type {type(value).__name__}")


_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_LAYER_KWARGS = {"kernel_size", "use_noise", "activation"}
_BLOCK_KWARGS = {"architecture", "resample_filter", "conv_clamp", "fp16_channels_last", "fused_modconv_default"}
_SUPPORTED = {
    "Generator": {"": {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                       "synthesis_kwargs"},
                  "mapping_kwargs": _MAPPING_KWARGS,
                  "synthesis_kwargs": {"channel_base", "channel_max", "num_fp16_res"} | _BLOCK_KWARGS | _LAYER_KWARGS},
    "Discriminator": {"": {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                           "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs",
                           "epilogue_kwargs"},
                      "block_kwargs": {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"},
                      "mapping_kwargs": _MAPPING_KWARGS - {"w_avg_beta"},
                      "epilogue_kwargs": {"mbstd_group_size", "mbstd_num_channels", "activation"}},
}
_CLASSES = {"Generator": sg.Generator, "Discriminator": sg.Discriminator}


def network_config(record: PersistentRecord, source: str) -> dict:
    """The constructor arguments of a Generator/Discriminator record, checked against what we implement."""
    if record.class_name not in _CLASSES:
        raise DDCSInputError(f"{source}: unsupported network class {record.class_name!r} "
                             f"(supported: {sorted(_CLASSES)} of stylegan2-ada-pytorch)")
    if record.init_args:
        raise DDCSInputError(f"{source}: {record.class_name} was built with positional arguments; unsupported")
    kwargs = plain(dict(record.init_kwargs), record.class_name)
    for group, allowed in _SUPPORTED[record.class_name].items():
        values = kwargs if not group else kwargs.get(group) or {}
        if not isinstance(values, dict):
            raise DDCSInputError(f"{source}: {record.class_name}.{group} is not a mapping")
        unknown = sorted(set(values) - allowed)
        if unknown:
            where = f"{record.class_name}{'.' + group if group else ''}"
            raise DDCSInputError(f"{source}: unsupported feature: {where} argument(s) {unknown} "
                                 "(not part of stylegan2-ada-pytorch's networks as implemented here)")
    return kwargs


def _collect(record: PersistentRecord, module: nn.Module, prefix: str, source: str,
             tensors: dict[str, torch.Tensor]) -> None:
    """Tensors of `record` and its submodules under their state_dict names; classes must correspond."""
    if record.class_name != type(module).__name__:
        raise DDCSInputError(f"{source}: {prefix.rstrip('.') or 'network'} is a {record.class_name}, "
                             f"expected {type(module).__name__} (unsupported variant)")
    for kind in ("_parameters", "_buffers"):
        for name, t in (record.state.get(kind) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise DDCSInputError(f"{source}: {prefix}{name} is not a tensor")
            tensors[prefix + name] = t
    ours = dict(module.named_children())
    theirs = {k: v for k, v in (record.state.get("_modules") or {}).items() if v is not None}
    extra = sorted(set(theirs) - set(ours))
    if extra:
        kinds = ", ".join(f"{prefix}{k} ({getattr(theirs[k], 'class_name', type(theirs[k]).__name__)})" for k in extra)
        raise DDCSInputError(f"{source}: unsupported submodule(s) {kinds}")
    for name, child in ours.items():
        sub = theirs.get(name)
        if sub is None and not list(child.state_dict()):
            continue
        if not isinstance(sub, PersistentRecord):
            raise DDCSInputError(f"{source}: submodule {prefix}{name} is missing from the pickle")
        _collect(sub, child, f"{prefix}{name}.", source, tensors)


def build_network(record: PersistentRecord, source: str = "network") -> nn.Module:
    """Our module for a Generator/Discriminator record, with its tensors copied in (eval mode, CPU)."""
    kwargs = network_config(record, source)
    try:
        module = _CLASSES[record.class_name](**kwargs)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{source}: cannot build {record.class_name} from its arguments ({e})") from e
    tensors: dict[str, torch.Tensor] = {}
    _collect(record, module, "", source, tensors)
    _load_checked(Path(source), module, tensors)
    return module.eval()


@dataclass
class NetworkPickle:
    """The networks of one pickle, rebuilt as our modules (None where the pickle lacks one)."""

    path: str
    sha256: str
    G: nn.Module | None
    D: nn.Module | None
    G_ema: nn.Module | None
    training_set_kwargs: dict | None = None
    extras: list[str] = field(default_factory=list)


def load_network_pickle(path: str | Path, keys: tuple[str, ...] = NETWORK_KEYS) -> NetworkPickle:
    """Read `path` safely and build the networks named in `keys` (of G, D, G_ema)."""
    path = Path(path)
    data = read_network_pickle(path)
    nets: dict[str, nn.Module | None] = {}
    for key in NETWORK_KEYS:
        record = data.get(key)
        if key in keys and record is not None:
            if not isinstance(record, PersistentRecord):
                raise DDCSInputError(f"{path}: {key} is a {type(record).__name__}, not a network")
            nets[key] = build_network(record, f"{path}:{key}")
        else:
            nets[key] = None
    tsk = data.get("training_set_kwargs")
    try:
        tsk = plain(tsk, "training_set_kwargs") if isinstance(tsk, dict) else None
    except DDCSInputError:
        tsk = None
    extras = sorted(str(k) for k in data if k not in NETWORK_KEYS and k != "training_set_kwargs")
    return NetworkPickle(str(path), sha256_file(path), training_set_kwargs=tsk, extras=extras, **nets)
