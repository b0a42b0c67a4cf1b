"""Victims and evaluators that researchers bring: an architecture by name, a weights file, a preprocessing.

`ClassifierSpec` is the typed form of a world config's `victim:` / `evaluator:` section;
`load_classifier` turns it into a module that maps generator images ([-1, 1], NCHW, the generator's
resolution) to logits, with the declared preprocessing inside, so the attack calls `victim(x)` and
its gradients flow through the crop/resize/normalisation back to the generator. The module also
offers `features(x)` (penultimate features) and `head`, the API the evaluation uses for KNN distances.

Weights are read without executing anything: safetensors, or `torch.load(weights_only=True)`.
The usual checkpoint wrappers and `module.` / `model.` key prefixes are undone (and reported);
anything that still does not fit is refused with the missing, unexpected and mis-shaped keys named.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from torch import nn

from ddcs_core.errors import DDCSInputError, config_from_dict
from ddcs_core.hashing import sha256_bytes
from ddcs_core.models.checkpoints import _safetensors_metadata, load_model
from ddcs_core.models.irse import IR_ARCHS, build_ir
from ddcs_core.models.preprocess import PRESETS, Preprocess, build_preprocess

# torchvision architectures by name -> dotted path of their final linear layer (the classification head).
TORCHVISION_HEADS: dict[str, str] = {
    **{f"resnet{d}": "fc" for d in (18, 34, 50, 101, 152)},
    **{n: "fc" for n in ("resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2")},
    **{n: "classifier.6" for n in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "vgg16", "vgg19")},
    **{f"densenet{d}": "classifier" for d in (121, 161, 169, 201)},
    "inception_v3": "fc",
    **{f"efficientnet_b{i}": "classifier.1" for i in range(8)},
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_large": "classifier.3",
    "mobilenet_v3_small": "classifier.3",
}
DEMO_PREFIX = "demo:"
DEMO_ARCHS = ("resnet-s", "vggbn-s")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
STRIPPED_PREFIXES = ("module.", "model.")
_SHOWN = 5


def known_archs() -> list[str]:
    return sorted(TORCHVISION_HEADS) + sorted(IR_ARCHS) + [DEMO_PREFIX + a for a in DEMO_ARCHS]


@dataclass(frozen=True)
class ClassifierSpec:
    """A victim or evaluator as a world config declares it.

    arch: a torchvision name (`resnet50`, `vgg16_bn`, `inception_v3` ...), a face backbone (`ir50`,
    `irse50`, `ir152`, `ir50-64`, `ir152-64` ...) or a demo classifier (`demo:resnet-s`, `demo:vggbn-s`).
    weights: a state dict (safetensors, or .pt/.pth read with weights_only=True); for demo archs our
    safetensors checkpoint. preprocess: a preset name or a list of steps (see `preprocess.py`);
    required except for demo archs, which resize and normalise inside. options: builder arguments
    (torchvision keyword arguments such as `transform_input`; `input_size` for IR archs).
    key_prefix: keep only the file's keys under this prefix (a checkpoint holding several models).
    sha256: the weights file's expected digest, checked when given.
    class_names: the name of each output index (a list, or a .txt file with one name a line), so
    private class folders are matched to outputs by name, not by their sorted order.
    """

    arch: str
    weights: Path
    num_classes: int
    preprocess: str | tuple[dict, ...] | None = None
    options: dict = field(default_factory=dict)
    key_prefix: str | None = None
    sha256: str | None = None
    class_names: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict | None, section: str = "victim", base_dir: str | Path | None = None) -> "ClassifierSpec":
        """Parse a config section; unknown keys and ill-typed values are refused, naming `section`.
        A relative `weights` path is taken relative to `base_dir` (the config file's folder) when given."""
        d = config_from_dict(cls, d, section)
        for key in ("arch", "weights", "num_classes"):
            if key not in d:
                raise DDCSInputError(f"{section}: missing key {key!r}")
        arch = d["arch"]
        if not isinstance(arch, str) or arch not in known_archs():
            raise DDCSInputError(f"{section}.arch: unknown architecture {arch!r} (known: {', '.join(known_archs())})")
        if not isinstance(d["weights"], (str, Path)) or not str(d["weights"]):
            raise DDCSInputError(f"{section}.weights: expected a file path, got {d['weights']!r}")
        weights = Path(d["weights"]).expanduser()
        if base_dir is not None and not weights.is_absolute():
            weights = Path(base_dir) / weights
        n = d["num_classes"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise DDCSInputError(f"{section}.num_classes: expected an int >= 2, got {n!r}")
        pre = d.get("preprocess")
        if pre is None and not arch.startswith(DEMO_PREFIX):
            raise DDCSInputError(f"{section}.preprocess: declare how generator images reach {arch}: a preset "
                                 f"({', '.join(sorted(PRESETS))}) or a list of steps")
        if pre is not None:
            build_preprocess(pre, f"{section}.preprocess")  # validated once here, rebuilt at load time
            pre = pre if isinstance(pre, str) else tuple(pre)
        options = d.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise DDCSInputError(f"{section}.options: expected a mapping of builder arguments, got {options!r}")
        prefix = d.get("key_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise DDCSInputError(f"{section}.key_prefix: expected a non-empty string, got {prefix!r}")
        digest = d.get("sha256")
        if digest is not None and (not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
            raise DDCSInputError(f"{section}.sha256: expected 64 hex digits, got {digest!r}")
        names = _class_names(d.get("class_names"), n, section, base_dir)
        return cls(arch, weights, n, pre, dict(options), prefix, digest.lower() if digest else None, names)

    def to_dict(self) -> dict:
        pre = self.preprocess if self.preprocess is None or isinstance(self.preprocess, str) else list(self.preprocess)
        return {"arch": self.arch, "weights": str(self.weights), "num_classes": self.num_classes, "preprocess": pre,
                "options": dict(self.options), "key_prefix": self.key_prefix, "sha256": self.sha256,
                "class_names": list(self.class_names) if self.class_names else None}


def _class_names(value: Any, n: int, section: str, base_dir: str | Path | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        if not path.is_file():
            raise DDCSInputError(f"{section}.class_names: file {path} not found")
        value = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise DDCSInputError(f"{section}.class_names: expected a list of names or a text file, one name a line")
    if len(value) != n or len(set(value)) != n:
        raise DDCSInputError(f"{section}.class_names: expected {n} distinct names (num_classes), got "
                             f"{len(value)} ({len(set(value))} distinct)")
    return tuple(value)


class Classifier(nn.Module):
    """Declared preprocessing -> backbone up to the penultimate features -> linear head.

    `info` records what was loaded: arch, file, sha256, format, wrapper key, stripped prefixes,
    dropped or renamed keys, the preprocessing steps and the parameter count.
    """

    def __init__(self, preprocess: Preprocess, body: nn.Module, head: nn.Module, num_classes: int, info: dict):
        super().__init__()
        self.preprocess, self.body, self.head = preprocess, body, head
        self.num_classes = num_classes
        self.info = info

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.preprocess(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _DemoFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


# ---- reading a weights file -------------------------------------------------------------------

def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _torch_load(path: Path, data: bytes) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for every kind of refusal
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise DDCSInputError(
                f"{path}: refused: the pickle needs Python objects beyond tensors ({found.group(1)}), and "
                f"checkpoints are only read with torch.load(weights_only=True), never unpickled unrestricted; "
                f"save model.state_dict() (torch.save or safetensors) instead of the model object") from e
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        if reason:
            raise DDCSInputError(f"{path}: refused by torch.load(weights_only=True) ({reason.group(1).strip()}); "
                                 f"write the state dict with torch.save or safetensors") from e
        if "Weights only load failed" in text:  # torch's advice to retry unrestricted is deliberately not passed on
            raise DDCSInputError(f"{path}: refused by torch.load(weights_only=True); write the state dict with "
                                 f"torch.save or safetensors") from e
        raise DDCSInputError(f"{path}: not a safetensors file or a torch checkpoint ({_first_line(e)})") from e


def _unwrap(obj: Any, path: Path, trail: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside `obj` and the wrapper keys that led to it ('state_dict', 'model/state_dict', ...)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not all(isinstance(k, str) for k in obj):
            raise DDCSInputError(f"{path}: state dict keys must be strings")
        return dict(obj), "/".join(trail) or None
    if isinstance(obj, dict) and len(trail) < 3:
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return _unwrap(obj[key], path, trail + (key,))
    where = f" under {'/'.join(trail)!r}" if trail else ""
    if isinstance(obj, dict):
        odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise DDCSInputError(f"{path}: no state dict found{where}: keys {_short([str(k) for k in obj])} are not "
                             f"all tensors (e.g. {str(odd[0])!r}) and none of {list(WRAPPER_KEYS)} holds one"
                             if odd else f"{path}: empty state dict{where}")
    raise DDCSInputError(f"{path}: expected a state dict (name -> tensor){where}, got {type(obj).__name__}")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of a weights file and how they were found: format, wrapper, sha256."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"weights file {path} not found")
    data = path.read_bytes()
    info = {"path": str(path), "sha256": sha256_bytes(data)}
    if _safetensors_metadata(data) is not None:
        try:
            tensors = st_load(data)
        except Exception as e:  # safetensors raises its own error type for every kind of corruption
            raise DDCSInputError(f"{path}: corrupt safetensors data ({_first_line(e)})") from e
        if not tensors:
            raise DDCSInputError(f"{path}: empty state dict")
        return tensors, info | {"format": "safetensors", "wrapper": None}
    tensors, wrapper = _unwrap(_torch_load(path, data), path)
    return tensors, info | {"format": "torch", "wrapper": wrapper}


# ---- fitting the tensors to the architecture ------------------------------------------------------

def _short(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return "[" + ", ".join(names[:_SHOWN]) + more + "]"


def _strip_prefixes(tensors: dict, own: dict, notes: dict) -> dict:
    while True:
        for p in STRIPPED_PREFIXES:
            if all(k.startswith(p) for k in tensors) and not all(k.startswith(p) for k in own):
                tensors = {k[len(p):]: v for k, v in tensors.items()}
                notes["stripped_prefixes"].append(p)
                break
        else:
            return tensors


_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                           r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _arch_fixups(arch: str, tensors: dict, own: dict, notes: dict) -> dict:
    """Known harmless differences: Inception's auxiliary head (off for inference) and DenseNet's
    pre-0.4 key names (`norm.1` for `norm1`)."""
    if arch == "inception_v3":
        aux = [k for k in tensors if k.startswith("AuxLogits.") and k not in own]
        if aux:
            notes["dropped_keys"] += len(aux)
            tensors = {k: v for k, v in tensors.items() if k not in set(aux)}
    if arch.startswith("densenet"):
        renamed = {}
        for k, v in tensors.items():
            m = _DENSENET_OLD.match(k)
            renamed[m.group(1) + m.group(2) if m and k not in own else k] = v
        notes["renamed_keys"] += sum(a != b for a, b in zip(tensors, renamed))
        tensors = renamed
    return tensors


def _prefix_hint(unexpected: list[str], own: dict) -> str:
    heads = {k.split(".", 1)[0] for k in unexpected if "." in k}
    for h in sorted(heads):
        if any(k.startswith(h + ".") and k[len(h) + 1:] in own for k in unexpected):
            return f" (the file's keys under {h + '.'!r} fit once stripped: set key_prefix: {h + '.'!r})"
    return ""


def fit_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path, arch: str, head: str,
                   key_prefix: str | None = None) -> dict:
    """Load `tensors` into `model` strictly after undoing wrappers' prefixes; returns what was changed.
    Refuses (naming `path`) missing, unexpected and mis-shaped keys and non-finite values."""
    own = model.state_dict()
    notes: dict = {"stripped_prefixes": [], "dropped_keys": 0, "renamed_keys": 0, "selected_prefix": key_prefix}
    if key_prefix is not None:
        chosen = {k[len(key_prefix):]: v for k, v in tensors.items() if k.startswith(key_prefix)}
        if not chosen:
            raise DDCSInputError(f"{path}: no key starts with key_prefix {key_prefix!r} "
                                 f"(the file's keys begin {_short(sorted(tensors))})")
        notes["dropped_keys"] += len(tensors) - len(chosen)
        tensors = chosen
    tensors = _arch_fixups(arch, _strip_prefixes(tensors, own, notes), own, notes)
    for k, v in own.items():  # checkpoints written before BatchNorm counted its batches lack these
        if k.endswith("num_batches_tracked") and k not in tensors:
            tensors[k] = v.clone()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys {_short(missing)}"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys {_short(unexpected)}"] if unexpected else []
        stripped = f"; stripped prefixes {notes['stripped_prefixes']}" if notes["stripped_prefixes"] else ""
        raise DDCSInputError(f"{path}: the weights do not fit {arch}: {'; '.join(parts)}{stripped}"
                             f"{_prefix_hint(unexpected, own)}")
    shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if tuple(tensors[k].shape) != tuple(v.shape)]
    if shapes:
        hint = ""
        if f"{head}.weight" in own and tuple(tensors[f"{head}.weight"].shape) != tuple(own[f"{head}.weight"].shape):
            hint = (f" (the file's head {head!r} has {tensors[f'{head}.weight'].shape[0]} classes, "
                    f"num_classes says {own[f'{head}.weight'].shape[0]})")
        raise DDCSInputError(f"{path}: {len(shapes)} tensors have the wrong shape for {arch} (file vs "
                             f"architecture): {_short(shapes)}{hint}")
    state = {}
    for k, ref in own.items():
        t = tensors[k]
        if t.is_floating_point() != ref.is_floating_point():
            raise DDCSInputError(f"{path}: tensor {k!r} has dtype {t.dtype}, {arch} expects {ref.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DDCSInputError(f"{path}: tensor {k!r} contains NaN or inf values")
        state[k] = t.to(ref.dtype)
    model.load_state_dict(state, strict=True)
    return notes


# ---- building ------------------------------------------------------------------------------------

def _split_head(model: nn.Module, head_path: str) -> tuple[nn.Module, nn.Module]:
    """(model with its head replaced by identity, the head)."""
    parent_path, _, name = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = parent.get_submodule(name)
    if isinstance(parent, nn.Sequential):
        parent[int(name)] = nn.Identity()
    else:
        setattr(parent, name, nn.Identity())
    return model, head


def _torchvision(arch: str, num_classes: int, options: dict) -> nn.Module:
    import torchvision

    kwargs = dict(options)
    if arch == "inception_v3":  # the auxiliary head only matters for training; weights come from the file
        kwargs.setdefault("init_weights", False)
        if kwargs.get("aux_logits"):
            raise DDCSInputError("inception_v3: aux_logits must stay off for inference (its keys are dropped)")
        kwargs["aux_logits"] = False
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{arch}: options {sorted(options)} not accepted ({_first_line(e)})") from e


def _builder(spec: ClassifierSpec) -> tuple[Callable[[], nn.Module], str]:
    if spec.arch in IR_ARCHS:
        unknown = sorted(set(spec.options) - {"input_size"})
        if unknown:
            raise DDCSInputError(f"{spec.arch}: unknown options {unknown} (IR archs take input_size)")

        def build() -> nn.Module:
            try:
                return build_ir(spec.arch, spec.num_classes, spec.options.get("input_size"))
            except ValueError as e:
                raise DDCSInputError(f"{spec.arch}: {e}") from e
        return build, "fc_layer"
    return (lambda: _torchvision(spec.arch, spec.num_classes, spec.options)), TORCHVISION_HEADS[spec.arch]


def _load_demo(spec: ClassifierSpec, preprocess: Preprocess) -> Classifier:
    if spec.options:
        raise DDCSInputError(f"{spec.arch}: demo classifiers take no options (got {sorted(spec.options)})")
    model, info = load_model(spec.weights, expected_sha256=spec.sha256)  # else the manifest beside it, if any
    arch = spec.arch[len(DEMO_PREFIX):]
    if info["arch"] != arch:
        raise DDCSInputError(f"{spec.weights}: holds a {info['arch']!r} classifier, the spec says {arch!r}")
    if model.num_classes != spec.num_classes:
        raise DDCSInputError(f"{spec.weights}: has {model.num_classes} classes, num_classes says {spec.num_classes}")
    head = nn.Sequential(model.dropout, model.head)
    record = {"arch": spec.arch, "path": str(spec.weights), "sha256": info["sha256"], "format": info["format"],
              "wrapper": None, "stripped_prefixes": [], "dropped_keys": 0, "renamed_keys": 0,
              "selected_prefix": None, "manifest_checked": bool(info["verified"]) and spec.sha256 is None,
              "meta": info.get("meta") or {}}
    return Classifier(preprocess, _DemoFeatures(model), head, spec.num_classes, record)


def load_classifier(spec: ClassifierSpec, device: str | torch.device = "cpu",
                    resolution: int | None = None) -> Classifier:
    """The classifier `spec` declares, in eval mode on `device`, taking generator images in [-1, 1].

    With `resolution` (the generator's), the preprocessing is checked to fit that size and one image
    is classified, so a crop or input size that cannot work is refused now rather than mid-attack.
    """
    preprocess = build_preprocess(spec.preprocess if spec.preprocess is not None else "none",
                                  f"{spec.arch} preprocess")
    if spec.arch.startswith(DEMO_PREFIX):
        model = _load_demo(spec, preprocess)
    else:
        tensors, record = read_state_dict(spec.weights)
        if spec.sha256 is not None and record["sha256"] != spec.sha256:
            raise DDCSInputError(f"{spec.weights}: sha256 {record['sha256']} does not match the declared {spec.sha256}")
        build, head_path = _builder(spec)
        net = build()
        record["arch"] = spec.arch
        record |= fit_state_dict(net, tensors, spec.weights, spec.arch, head_path, spec.key_prefix)
        body, head = _split_head(net, head_path)
        model = Classifier(preprocess, body, head, spec.num_classes, record)
    model.info["preprocess"] = preprocess.describe()
    if spec.class_names:  # where the evaluation looks for them in a checkpoint's info
        model.info["meta"] = {**model.info.get("meta", {}), "class_names": list(spec.class_names)}
    model.info["parameters"] = sum(p.numel() for p in model.parameters())
    model = model.to(device).eval()
    if resolution is not None:
        check_resolution(model, resolution)
    return model


def check_resolution(model: Classifier, resolution: int) -> tuple[int, int]:
    """The classifier's input size for `resolution` px generator images, after one trial forward."""
    arch, path = model.info["arch"], model.info["path"]
    try:
        size = model.preprocess.out_size((resolution, resolution))
    except DDCSInputError as e:
        raise DDCSInputError(f"{arch} ({path}): {resolution} px generator images: {e}") from None
    x = torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError) as e:
        raise DDCSInputError(f"{arch} ({path}) cannot classify {resolution} px generator images preprocessed to "
                             f"{size[0]}x{size[1]}: {_first_line(e)}") from e
    if tuple(out.shape) != (1, model.num_classes):
        raise DDCSInputError(f"{arch} ({path}): output shape {tuple(out.shape)}, expected (1, {model.num_classes})")
    return size
