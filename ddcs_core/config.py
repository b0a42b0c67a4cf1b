"""The experiment's settings: one frozen, typed tree, parsed once at the edge and passed to the steps.

The edges are the YAML file (`load_config`), `--set section.key=value` overrides (`apply_override`),
the app's new-run form (`experiment.AttackSettings.apply`) and a run's stored `config.json`
(`parse_experiment`, which also reads runs written before this module existed). Each section is the
config class of the code that uses it, so its defaults live in one place, the field defaults:

    world       WorldConfig (here)               what is attacked: generator, discriminator, victim, ...
    transfer    TransferSettings (here) around transfer.TransferConfig, one per mode
    inversion   attacks.InversionConfig
    evaluation  evaluate.EvalConfig (its `eval_model` and `device` come from the world and --device)
    fid         FIDConfig (here)

Every value is checked when the tree is built, and a bad one raises DDCSInputError naming its key
(`transfer.lam`, `world.kind`, ...); unknown keys are refused. `to_dict()` is what a run's
`config.json` stores under "experiment", and `parse_experiment(to_dict())` gives the same tree.

Defaults that used to disagree, and which value won:
- transfer.lam: 0.03 (the demo's and the app form's value, picked by the pilots in demo.yaml); the
  old TransferConfig default 1.0 made a config that omitted λ collapse the generator.
- projection: `reference` (the paper's code and the demo); geometry.NGDConfig's default followed it.
  Transfer always passes the mode explicitly, so no run changes.
- Lanczos tolerance: 1e-3 (TransferConfig's, what every run used); NGDConfig's default followed it.
The demo config sets every one of these explicitly, so its effective values are unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ddcs_core.attacks import InversionConfig
from ddcs_core.errors import DDCSInputError
from ddcs_core.evaluate import EvalConfig
from ddcs_core.transfer import MODES, TransferConfig

WORLD_ROLES = ("generator", "discriminator", "victim", "evaluator", "private", "public")
WORLD_PATHS = ("generator", "discriminator", "private", "public")  # the roles given as file paths
_EVAL_OWN = ("eval_model", "device")  # set by the experiment from the world and --device, never in a config


@dataclass(frozen=True)
class WorldConfig:
    """What an experiment attacks. `kind` names the loader (worlds.WORLD_LOADERS).

    `demo` (the default) reads every role from the shipped `folder` (sha256-checked) and the LFW split
    under `data_root`. `custom` (custom_world.py) reads the user's own: `generator` (a StyleGAN2-ADA
    .pkl, an imported folder or our safetensors), `discriminator` (default: the generator's pickle or
    folder's D), `victim` and `evaluator` (mappings parsed by models.victims.ClassifierSpec), `private`
    and `public` (class-folder trees or .npz), `resolution` (the generator's output size) and, for a
    class-conditional generator, `generator_class` (the class G and D are conditioned on).
    Relative paths are resolved against the config file's folder by `load_config`."""

    kind: str = "demo"
    folder: str = "checkpoints/demo"
    data_root: str | None = None
    generator: str | None = None
    discriminator: str | None = None
    victim: dict | None = None
    evaluator: dict | None = None
    private: str | None = None
    public: str | None = None
    resolution: int | None = None
    generator_class: int | None = None

    def __post_init__(self) -> None:
        from ddcs_core.worlds import WORLD_LOADERS

        if self.kind not in WORLD_LOADERS:
            raise DDCSInputError(f"world.kind {self.kind!r} has no loader (known: {', '.join(WORLD_LOADERS)})")
        for name in ("folder", "data_root", *WORLD_PATHS):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DDCSInputError(f"world.{name} must be a path (text), got {value!r}")
        for name in ("victim", "evaluator"):
            value = getattr(self, name)
            if value is not None:
                from ddcs_core.models.victims import ClassifierSpec

                spec = ClassifierSpec.from_dict(value, f"world.{name}")  # checked now, loaded by the world
                object.__setattr__(self, name, spec.to_dict())
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 4):
            raise DDCSInputError(f"world.resolution must be an int >= 4, got {self.resolution!r}")
        k = self.generator_class
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
            raise DDCSInputError(f"world.generator_class must be an int >= 0, got {k!r}")

    def roles(self) -> dict[str, Any]:
        """The role fields that are set (a loader that reads none of them refuses any)."""
        return {name: getattr(self, name) for name in (*WORLD_ROLES, "resolution", "generator_class")
                if getattr(self, name) is not None}


def resolve_world_paths(world: dict, base_dir: Path) -> dict:
    """The `world` section with its relative file paths (generator, discriminator, private, public and
    the classifiers' weights) taken against `base_dir`, the config file's folder, so the parsed config
    and a run's config.json name the same files wherever the run is resumed from. `demo` worlds keep
    their repository-relative folder."""
    if world.get("kind", "demo") == "demo":
        return world
    out = dict(world)
    for name in WORLD_PATHS:
        value = out.get(name)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            out[name] = str(base_dir / value)
    for name in ("victim", "evaluator"):
        spec = out.get(name)
        if isinstance(spec, dict):
            spec = dict(spec)
            for key in ("weights", "class_names"):  # class_names may name a text file
                if isinstance(spec.get(key), str) and not Path(spec[key]).expanduser().is_absolute():
                    spec[key] = str(base_dir / spec[key])
            out[name] = spec
    return out


@dataclass(frozen=True)
class TransferSettings:
    """The transfer section: which modes to train, and the TransferConfig they share."""

    modes: tuple[str, ...] = MODES
    common: TransferConfig = field(default_factory=TransferConfig)

    def __post_init__(self) -> None:
        modes = self.modes
        if (not isinstance(modes, (list, tuple)) or not modes or any(m not in MODES for m in modes)
                or len(set(modes)) != len(modes)):
            raise DDCSInputError(f"transfer.modes must be distinct names from {MODES}, got {modes!r}")
        object.__setattr__(self, "modes", tuple(modes))

    def for_mode(self, mode: str) -> TransferConfig:
        """The TransferConfig of one mode."""
        return replace(self.common, mode=mode)

    def to_dict(self) -> dict:
        return {"modes": list(self.modes), **{k: v for k, v in self.common.to_dict().items() if k != "mode"}}


@dataclass(frozen=True)
class FIDConfig:
    """Generator FID at fixed latents: `samples` generated images against as many public ones."""

    samples: int = 2000
    seed: int = 123

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 2:
            raise DDCSInputError(f"fid.samples must be an int >= 2, got {self.samples!r}")
        if not isinstance(self.seed, int):
            raise DDCSInputError(f"fid.seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment, every setting typed; `to_dict()` is its config.json form."""

    name: str = "demo"
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    classes: str | int | tuple[str, ...] = "all"
    transfer: TransferSettings = field(default_factory=TransferSettings)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    fid: FIDConfig = field(default_factory=FIDConfig)

    def __post_init__(self) -> None:
        from ddcs_core.runs import check_name

        check_name(self.name)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise DDCSInputError(f"seed must be an int, got {self.seed!r}")
        c = self.classes
        if isinstance(c, list):
            c = tuple(c)
            object.__setattr__(self, "classes", c)
        if not (c == "all" or (isinstance(c, int) and not isinstance(c, bool) and c >= 1)
                or (isinstance(c, tuple) and c and all(isinstance(x, str) for x in c))):
            raise DDCSInputError(f"classes must be 'all', a count, or a list of class names, got {c!r}")

    @property
    def modes(self) -> tuple[str, ...]:
        return self.transfer.modes

    def to_dict(self) -> dict:
        evaluation = {k: v for k, v in asdict(self.evaluation).items() if k not in _EVAL_OWN}
        out = {"name": self.name, "seed": self.seed, "world": asdict(self.world),
               "classes": list(self.classes) if isinstance(self.classes, tuple) else self.classes,
               "transfer": self.transfer.to_dict(), "inversion": self.inversion.to_dict(),
               "evaluation": evaluation, "fid": asdict(self.fid)}
        return json.loads(json.dumps(out, allow_nan=False))


SECTIONS = tuple(f.name for f in fields(ExperimentConfig))


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DDCSInputError(f"{where}: section must be a mapping, got {value!r}")
    return dict(value)


def _known(d: dict, known: list[str], section: str, source: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise DDCSInputError(f"{source}: unknown {section} keys {unknown} (known: {sorted(known)})")


def _finite(d: dict, section: str, source: str) -> None:
    try:
        json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{source}: {section} values must be plain numbers, strings, lists and mappings ({e})") from e


def parse_experiment(raw: dict, source: str = "config") -> ExperimentConfig:
    """The typed experiment of a nested mapping (a YAML file after overrides, or a stored config.json's
    "experiment"): missing keys take their defaults, sub-seeds default to the top-level seed."""
    raw = _mapping(raw, source)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise DDCSInputError(f"{source}: unknown sections {unknown} (known: {sorted(SECTIONS)})")
    _finite(raw, "all", source)
    top = {k: raw[k] for k in ("name", "seed", "classes") if k in raw}
    seed = top.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DDCSInputError(f"{source}: seed must be an int, got {seed!r}")
    world = _mapping(raw.get("world"), f"{source}: world")
    _known(world, [f.name for f in fields(WorldConfig)], "world", source)
    transfer = _mapping(raw.get("transfer"), f"{source}: transfer")
    if "mode" in transfer:
        raise DDCSInputError(f"{source}: transfer.mode is set per mode; list the modes in transfer.modes")
    _known(transfer, ["modes", *(f.name for f in fields(TransferConfig) if f.name != "mode")], "transfer", source)
    modes = transfer.pop("modes", list(MODES))
    transfer.setdefault("seed", seed)
    common = TransferConfig.from_dict({**transfer, "mode": modes[0] if isinstance(modes, list) and modes and
                                       modes[0] in MODES else MODES[0]})
    inversion = _mapping(raw.get("inversion"), f"{source}: inversion")
    inversion.setdefault("seed", seed)
    evaluation = _mapping(raw.get("evaluation"), f"{source}: evaluation")
    _known(evaluation, [f.name for f in fields(EvalConfig) if f.name not in _EVAL_OWN], "evaluation", source)
    evaluation.setdefault("seed", seed)
    fid = _mapping(raw.get("fid"), f"{source}: fid")
    _known(fid, [f.name for f in fields(FIDConfig)], "fid", source)
    return ExperimentConfig(**top, world=WorldConfig(**world), transfer=TransferSettings(modes, common),
                            inversion=InversionConfig.from_dict(inversion), evaluation=EvalConfig(**evaluation),
                            fid=FIDConfig(**fid))


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the nested mapping `raw` (value parsed as YAML: 0.3, [ngd], true, text)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise DDCSInputError(f"--set {item!r}: expected section.key=value, e.g. transfer.lam=0.3")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DDCSInputError(f"--set {item!r}: the value is not valid YAML ({e})") from e
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as text; on the command line it is a number
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DDCSInputError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def preset_replaces_file(raw: dict, overrides: list[str]) -> None:
    """`--set transfer.ngd_preset=NAME` asks for that preset: drop the file's values of the preset's
    fields (a file's `ngd_scale: spectral` would otherwise win over the preset); `--set`s still win."""
    from ddcs_core.transfer import NGD_PRESETS, preset_values

    for item in overrides:
        key, _, text = item.partition("=")
        if key.strip() == "transfer.ngd_preset":
            try:
                name = yaml.safe_load(text)
            except yaml.YAMLError:
                return  # apply_override reports it
            if name in NGD_PRESETS and isinstance(raw.get("transfer"), dict):
                for field_name in preset_values(name):
                    raw["transfer"].pop(field_name, None)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """A YAML experiment config with `overrides` ("section.key=value") written over it, parsed."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"--config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DDCSInputError(f"--config {path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise DDCSInputError(f"--config {path}: must be a mapping of sections")
    overrides = list(overrides or [])
    preset_replaces_file(raw, overrides)
    for item in overrides:
        apply_override(raw, item)
    if isinstance(raw.get("world"), dict):
        raw["world"] = resolve_world_paths(raw["world"], path.resolve().parent)
    return parse_experiment(raw, str(path) + "".join(f" --set {o}" for o in overrides or []))
