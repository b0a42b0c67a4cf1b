"""Write network pickles in the layout of stylegan2-ada-pytorch's training snapshots, from our modules.

For tests and smoke worlds: a dict {'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'} whose
networks are `torch_utils.persistence._reconstruct_persistent_obj(meta)` calls, meta holding the class
name, a (placeholder) module source and the object's state as `nn.Module.__dict__` holds it — parameters,
buffers, submodules, `_init_kwargs` with `dnnlib.util.EasyDict` groups, numpy float attributes — with
tensors pickled the way plain `pickle` pickles them (nested `torch.save` storages). The referenced
globals need not exist here: they are written by name, never imported.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
from torch import nn

from ddcs_core import atomic

PERSISTENCE_VERSION = 6
MODULE_SRC = "# module source placeholder written by ddcs_core's network pickle writer\n"


def _reconstruct_persistent_obj(meta):  # written as torch_utils.persistence._reconstruct_persistent_obj
    raise RuntimeError("stand-in: only ever pickled by name")


def _easydict(*args, **kwargs):  # written as dnnlib.util.EasyDict
    raise RuntimeError("stand-in: only ever pickled by name")


_NAMES = {id(_reconstruct_persistent_obj): ("torch_utils.persistence", "_reconstruct_persistent_obj"),
          id(_easydict): ("dnnlib.util", "EasyDict")}


class _Persistent:
    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


class _EasyDict(dict):
    def __reduce__(self):
        return _easydict, (), None, None, iter(self.items())


def _easy(value):
    if isinstance(value, dict):
        return _EasyDict({k: _easy(v) for k, v in value.items()})
    return value


class _Writer(pickle._Pickler):
    """Pure-Python pickler that writes our stand-in functions under their NVIDIA names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_named(self, obj, name=None):
        target = _NAMES.get(id(obj))
        if target is None:
            return pickle._Pickler.save_global(self, obj, name)
        self.write(pickle.GLOBAL + f"{target[0]}\n{target[1]}\n".encode())
        self.memoize(obj)

    dispatch[types.FunctionType] = _save_named


def _record(module: nn.Module, init_kwargs: dict | None) -> _Persistent:
    state = {
        "training": False,
        "_parameters": OrderedDict((k, v) for k, v in module._parameters.items()),
        "_buffers": OrderedDict((k, v) for k, v in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict((k, _record(m, None)) for k, m in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": _easy(dict(init_kwargs or {})),
    }
    for k, v in vars(module).items():  # scalar attributes, floats as numpy float64 as in NVIDIA's modules
        if k.startswith("_") or k in state or k == "config":
            continue
        if isinstance(v, float):
            state[k] = np.float64(v)
        elif isinstance(v, (bool, int, str, type(None))) or (isinstance(v, list) and all(isinstance(x, int) for x in v)):
            state[k] = v
    return _Persistent(dict(type="class", version=PERSISTENCE_VERSION, module_src=MODULE_SRC,
                            class_name=type(module).__name__, state=state))


def network_pickle_bytes(G: nn.Module | None = None, D: nn.Module | None = None, G_ema: nn.Module | None = None,
                         training_set_kwargs: dict | None = None, protocol: int = 4) -> bytes:
    """The bytes of a snapshot pickle holding our `stylegan2_ada` modules (each with `.config`)."""
    data: dict = {"training_set_kwargs": _easy(dict(training_set_kwargs or {}))}
    for key, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        if net is not None:
            data[key] = _record(net.cpu().eval(), net.config)
    data["augment_pipe"] = None
    buf = io.BytesIO()
    _Writer(buf, protocol=protocol).dump(data)
    return buf.getvalue()


def write_network_pickle(path: str | Path, G: nn.Module | None = None, D: nn.Module | None = None,
                         G_ema: nn.Module | None = None, training_set_kwargs: dict | None = None) -> Path:
    """Atomically write `network_pickle_bytes(...)` to `path`."""
    return atomic.write_bytes(Path(path), network_pickle_bytes(G, D, G_ema, training_set_kwargs))
