"""The paper's experiment as one resumable run: transfer → inversion → pools → evaluation → table.

Steps (each recorded in `<run>/steps.json` when finished, so a rerun skips it):
  fid-<generator>     FID of the generator at fixed latents against public images (named features);
                      generators are `pretrained` (the world's) and the transferred `<mode>` ones
  invert-<generator>  Plug-and-Play inversion with the pre-trained generator (pool `vanilla`, the
                      paper's name) and with every transferred one (pool `transfer-<mode>`), resumable
                      per chunk
  transfer-<mode>     fine-tune the world's generator (vanilla | entropy | ngd), resumable per checkpoint
  dual-<mode>         the paper's dual pool `dual-<mode>` = vanilla ∪ transfer-<mode>
  evaluate-<pool>     the engine's evaluation of every pool against the private targets
  map                 UMAP coordinates of targets and every pool (the app's Map)
  table               `reproduction.md` and `reproduction.json`
They run pool by pool: the pre-trained generator's pool first, then each mode's transfer, inversion,
pools and evaluations, so a run that is still going (e.g. the app's first start) already shows
finished pools.
Everything random is seeded from the config (noise, batches, latents, augmentations), and the
device is not part of the config, so a run resumed on another machine keeps its identity. A rerun
after a kill does exactly the work an uninterrupted run does: with deterministic kernels
(`torch.backends.mkldnn.enabled = False` on the CPU, as the tests run) the results are bit-identical;
with oneDNN's faster convolutions they agree to float rounding (oneDNN's summation order may depend
on memory layout, so latents can differ in the last bits).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from ddcs_core import atomic
from ddcs_core.attacks import AttackResult, InversionConfig, dual_pool, invert
from ddcs_core.attacks.fingerprint import module_digest
from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.jobs import JobCancelled, Param, devices, register_job
from ddcs_core.models.train_gan import save_grid
from ddcs_core.pool_names import PRETRAINED, VANILLA_POOL, pool_name
from ddcs_core.runs import Run, RunStore
from ddcs_core.transfer import MODES, TransferConfig, grid_latents, transfer, transfer_paths

Report = Callable[[float, str], None]
STEPS_FILE = "steps.json"
DEFAULTS: dict = {
    "name": "demo",
    "seed": 0,
    "world": {"folder": "checkpoints/demo", "data_root": None},
    "classes": "all",
    "transfer": {"modes": list(MODES)},
    "inversion": {},
    "evaluation": {"profile": "fast", "batch_size": 64},
    "fid": {"samples": 2000, "seed": 123},
}


class StepCancelled(JobCancelled):
    """Raised by a step when `cancelled()` turned true; the step's state on disk resumes it later."""


@dataclass
class AttackWorld:
    """What an experiment attacks with: victim, pre-trained G and D, evaluator checkpoint, data."""

    victim: torch.nn.Module
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    evaluator_path: str
    targets: ImageSet
    public: np.ndarray
    provenance: dict


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """A YAML experiment config, with `overrides` ("section.key=value", value in YAML) written over
    it, merged over DEFAULTS and validated."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"--config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DDCSInputError(f"--config {path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise DDCSInputError(f"--config {path}: must be a mapping of sections")
    for item in overrides or []:
        apply_override(raw, item)
    return resolve_config(raw, str(path) + "".join(f" --set {o}" for o in overrides or []))


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
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DDCSInputError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def resolve_config(raw: dict, source: str = "config") -> dict:
    """DEFAULTS updated by `raw`, seeds filled in, every section checked by its own config class."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise DDCSInputError(f"{source}: unknown sections {unknown} (known: {sorted(DEFAULTS)})")
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if isinstance(cfg[key], dict):
            if value is not None and not isinstance(value, dict):
                raise DDCSInputError(f"{source}: section {key!r} must be a mapping, got {value!r}")
            cfg[key] = {**cfg[key], **(value or {})}
        else:
            cfg[key] = value
    seed = cfg["seed"]
    if not isinstance(seed, int):
        raise DDCSInputError(f"{source}: seed must be an int, got {seed!r}")
    modes = cfg["transfer"].get("modes")
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise DDCSInputError(f"{source}: transfer.modes must be distinct names from {MODES}, got {modes!r}")
    cfg["transfer"].setdefault("seed", seed)
    cfg["inversion"].setdefault("seed", seed)
    cfg["evaluation"].setdefault("seed", seed)
    for mode in modes:
        transfer_config(cfg, mode)
    cfg["inversion"] = InversionConfig.from_dict(cfg["inversion"]).to_dict()
    classes = cfg["classes"]
    if not (classes == "all" or (isinstance(classes, int) and classes >= 1)
            or (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes))):
        raise DDCSInputError(f"{source}: classes must be 'all', a count, or a list of class names, got {classes!r}")
    from ddcs_core.evaluate import EvalConfig

    eval_fields = set(EvalConfig.__dataclass_fields__) - {"eval_model", "device"}
    bad = sorted(set(cfg["evaluation"]) - eval_fields)
    if bad:
        raise DDCSInputError(f"{source}: unknown evaluation keys {bad} (known: {sorted(eval_fields)})")
    EvalConfig(**cfg["evaluation"]).resolved()
    fid = cfg["fid"]
    if set(fid) != {"samples", "seed"} or not isinstance(fid["samples"], int) or fid["samples"] < 2:
        raise DDCSInputError(f"{source}: fid needs samples (int >= 2) and seed, got {fid!r}")
    try:
        return json.loads(json.dumps(cfg, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise DDCSInputError(f"{source}: values must be plain numbers, strings, lists and mappings ({e})") from e


def transfer_config(cfg: dict, mode: str) -> TransferConfig:
    """The TransferConfig of one mode: the shared `transfer` section with that mode."""
    section = {k: v for k, v in cfg["transfer"].items() if k != "modes"}
    return TransferConfig.from_dict({**section, "mode": mode})


def load_demo_world(config: dict, device: torch.device, progress: bool = True) -> AttackWorld:
    """The shipped demo world (sha256-verified) and its LFW split: private_train are the targets."""
    from ddcs_core import pipeline

    folder = Path(config["world"]["folder"])
    if not folder.is_absolute():
        folder = pipeline.REPO / folder
    world = pipeline.load_world(folder, device=device)
    data = pipeline.demo_data(world.manifest.get("config"), config["world"].get("data_root"), progress)
    if data.fingerprint != world.manifest.get("data_fingerprint"):
        raise DDCSInputError(f"{folder}: the LFW data under the data root differ from those the world was built on")
    provenance = {"folder": str(config["world"]["folder"]), "data_fingerprint": data.fingerprint,
                  "files": {k: v["sha256"] for k, v in world.manifest["files"].items()}}
    return AttackWorld(world.victim, world.generator, world.discriminator, str(folder / pipeline.FILES["evaluator"]),
                       data["private_train"], data["public"].images, provenance)


def _classes(config: dict, targets: ImageSet) -> list[int]:
    sel = config["classes"]
    if sel == "all":
        return list(range(len(targets.class_names)))
    if isinstance(sel, int):
        return list(range(min(sel, len(targets.class_names))))
    missing = [c for c in sel if c not in targets.class_names]
    if missing:
        raise DDCSInputError(f"classes {missing} are not among the targets' classes")
    return [targets.class_names.index(c) for c in sel]


class Experiment:
    """One run of the experiment: step functions over a world, writing into a Run."""

    def __init__(self, run: Run, world: AttackWorld, config: dict, device: torch.device,
                 progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.run, self.world, self.config = run, world, config
        self.device, self.progress, self.log = device, progress, log
        self.modes: list[str] = list(config["transfer"]["modes"])
        self.classes = _classes(config, world.targets)
        n = getattr(world.victim, "num_classes", None)
        if n is not None and n != len(world.targets.class_names):
            raise DDCSInputError(f"the victim has {n} classes but the targets have {len(world.targets.class_names)}")

    # bookkeeping -------------------------------------------------------------------------------
    def record(self) -> dict:
        return steps_record(self.run)

    def steps(self) -> list[tuple[str, Callable[[Report, Callable[[], bool]], None]]]:
        def evaluate(pool: str) -> tuple:
            return f"evaluate-{pool}", lambda r, s: self.evaluate_step(pool)

        out: list = [(f"fid-{PRETRAINED}", lambda r, s: self.fid_step(PRETRAINED)),
                     (f"invert-{PRETRAINED}", lambda r, s: self.invert_step(PRETRAINED, r, s)), evaluate(VANILLA_POOL)]
        for m in self.modes:
            out += [(f"transfer-{m}", lambda r, s, m=m: self.transfer_step(m, r, s)),
                    (f"fid-{m}", lambda r, s, m=m: self.fid_step(m)),
                    (f"invert-{m}", lambda r, s, m=m: self.invert_step(m, r, s)), evaluate(pool_name(m)),
                    (f"dual-{m}", lambda r, s, m=m: self.dual_step(m)), evaluate(f"dual-{m}")]
        out += [("map", self.map_step), ("table", lambda r, s: self.table_step())]
        return out

    def generators(self) -> list[str]:
        return [PRETRAINED] + self.modes

    def run_step(self, name: str, report: Report | None = None, cancelled: Callable[[], bool] | None = None) -> bool:
        """Run one step unless recorded as done; returns True when it ran."""
        steps = dict(self.steps())
        if name not in steps:
            raise DDCSInputError(f"unknown step {name!r} (steps: {', '.join(steps)})")
        record = self.record()
        if record.get(name, {}).get("done"):
            return False
        t = time.perf_counter()
        steps[name](report or (lambda f, m: None), cancelled or (lambda: False))
        record = self.record()
        record[name] = {"done": True, "seconds": round(time.perf_counter() - t, 2), "device": str(self.device),
                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic.write_json(self.run.path / STEPS_FILE, record)
        return True

    def run_all(self, report: Report | None = None, cancelled: Callable[[], bool] | None = None,
                only: list[str] | None = None) -> dict:
        """Every step not yet done (or only those named in `only`), in order; `report` gets the whole
        run's fraction, `cancelled` is checked between steps and inside the long ones (StepCancelled is
        raised, state kept)."""
        say = report or (lambda f, m: None)
        stop = cancelled or (lambda: False)
        names = [name for name, _ in self.steps()]
        if only is not None:
            unknown = sorted(set(only) - set(names))
            if unknown:
                raise DDCSInputError(f"unknown steps {unknown} (steps: {', '.join(names)})")
            names = [name for name in names if name in only]
        for i, name in enumerate(names):
            if stop():
                raise StepCancelled(f"run cancelled before step {name}; rerun to resume")
            head = f"{i + 1}/{len(names)} {name}"
            say(i / len(names), head)
            if self.run_step(name, lambda f, m, i=i, head=head: say((i + f) / len(names), f"{head}: {m}"), stop):
                self.log(f"[run] {head}: done in {self.record()[name]['seconds']:.1f} s")
            else:
                self.log(f"[run] {head}: already done")
        say(1.0, "all steps done")
        return self.record()

    # generators --------------------------------------------------------------------------------
    def generator(self, name: str) -> torch.nn.Module:
        if name == PRETRAINED:
            return self.world.generator.to(self.device).eval()
        from ddcs_core.models.checkpoints import load_model

        path = transfer_paths(self.run.path, name)["G"]
        if not path.is_file():
            raise DDCSInputError(f"{path}: the transfer step for mode {name!r} has not finished")
        return load_model(path, device=self.device)[0]

    def transfer_step(self, mode: str, report: Report, cancelled: Callable[[], bool]) -> None:
        result = transfer(self.world.generator, self.world.discriminator, self.world.victim, self.world.public,
                          transfer_config(self.config, mode), self.run.path, device=self.device,
                          progress=self.progress, report=report, should_stop=cancelled)
        if result is None:
            raise StepCancelled(f"transfer {mode} cancelled; its state resumes it")

    def fid_step(self, name: str) -> None:
        from ddcs_core.features import classifier_outputs
        from ddcs_core.metrics import fid, prediction_confidence
        from ddcs_core.perceptual import PerceptualDistance
        from ddcs_core.pipeline import generator_samples

        c = self.config["fid"]
        G = self.generator(name)
        if name == PRETRAINED:  # the starting point of every mode's grid, at the same fixed latents
            grid = transfer_config(self.config, self.modes[0])
            with torch.no_grad():
                x = G(grid_latents(grid, G.z_dim).to(self.device), noise_mode="const")
            save_grid(self.run.path / "grids" / f"{PRETRAINED}.png", x, grid.grid)
        samples = generator_samples(G, c["samples"], c["seed"])
        public = self.world.public
        rng = np.random.default_rng(c["seed"])
        real = public[rng.choice(len(public), size=min(c["samples"], len(public)), replace=False)]
        metric = PerceptualDistance("alex", device=self.device)
        real_features = (metric.embed_cached(real) or metric.embed(real)).pooled  # the same subset for every generator
        value = fid(real_features, metric.embed(samples).pooled)
        with torch.no_grad():
            logits, _ = classifier_outputs(self.world.victim.to(self.device).eval(), samples, self.device)
        victim = prediction_confidence(logits)
        atomic.write_json(self.run.path / "generators" / f"{name}.json", {
            "generator": name, "fid": value, "features": metric.feature_name, "samples": c["samples"],
            "victim_entropy": victim["entropy"], "victim_confidence": victim["confidence"],
            "latent_seed": c["seed"], "against": f"{len(real)} public images", "noise_mode": "const",
            "note": "FID with the named LPIPS-backbone features at fixed latents, not Inception-v3"})

    # pools ----------------------------------------------------------------------------------------
    def invert_step(self, name: str, report: Report, cancelled: Callable[[], bool]) -> None:
        pool = pool_name(name)
        config = InversionConfig.from_dict(self.config["inversion"])
        victim = self.world.victim.to(self.device).eval()
        result = invert(self.generator(name), victim, self.classes, config, name=pool,
                        class_names=self.world.targets.class_names, work_dir=self.run.path / "work" / "invert" / pool,
                        progress=self.progress, report=report, should_stop=cancelled)
        if result is None:
            raise StepCancelled(f"inversion {pool} cancelled; finished chunks resume it")
        self.write_pool(pool, result)

    def write_pool(self, pool: str, result: AttackResult) -> None:
        self.run.write_recon(pool, result.image_set(self.world.targets.class_names, pool), result.latents)
        atomic.write_npz(self.run.pool_dir(pool) / "confidence.npz", confidence=result.confidence)

    def read_pool(self, pool: str) -> AttackResult:
        recon, latents = self.run.recon(pool)
        with np.load(self.run.pool_dir(pool) / "confidence.npz") as z:
            confidence = z["confidence"]
        return AttackResult(recon.images, recon.labels, latents, confidence, list(recon.paths))

    def dual_step(self, mode: str) -> None:
        pool = f"dual-{mode}"
        self.write_pool(pool, dual_pool(self.read_pool(VANILLA_POOL), self.read_pool(pool_name(mode))))

    def evaluate_step(self, pool: str) -> None:
        from ddcs_core.evaluate import EvalConfig, evaluate_sets

        recon, _ = self.run.recon(pool)
        config = EvalConfig(**self.config["evaluation"], eval_model=self.world.evaluator_path, device=str(self.device))
        self.run.write_evaluation(pool, evaluate_sets(self.world.targets, recon, config, progress=self.progress))

    def map_step(self, report: Report, cancelled: Callable[[], bool]) -> None:
        from ddcs_core.embedding_map import MapCancelled, ensure_map

        try:
            ensure_map(self.run, device=str(self.device), report=report, cancelled=cancelled)
        except MapCancelled:
            raise StepCancelled("map cancelled; rerun to compute it") from None

    def table_step(self) -> None:
        from ddcs_core.reproduce import reproduction_table, to_markdown

        rows = reproduction_table(self.run)
        atomic.write_json(self.run.path / "reproduction.json", rows)
        atomic.write_text(self.run.path / "reproduction.md", to_markdown(rows))


def step_names(config: dict) -> list[str]:
    """The experiment's steps in the order `Experiment.run_all` runs them, from the config alone (the
    app's status line counts and times them without loading a world)."""
    names = [f"fid-{PRETRAINED}", f"invert-{PRETRAINED}", f"evaluate-{VANILLA_POOL}"]
    for m in config["transfer"]["modes"]:
        names += [f"transfer-{m}", f"fid-{m}", f"invert-{m}", f"evaluate-{pool_name(m)}", f"dual-{m}",
                  f"evaluate-dual-{m}"]
    return names + ["map", "table"]


def steps_record(run: Run) -> dict:
    """`<run>/steps.json`: each finished step with its time and device ({} before the first)."""
    path = run.path / STEPS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run_finished(run: Run) -> bool:
    """Whether every step of the experiment run is recorded as done (the table is the last one)."""
    return bool(steps_record(run).get("table", {}).get("done"))


def run_config(config: dict, world: AttackWorld) -> dict:
    """What config.json holds: the resolved experiment (seeds included) and the world's provenance."""
    out = {"kind": "experiment", "experiment": config, "world": world.provenance,
           "models": {"victim": module_digest(world.victim), "generator": module_digest(world.generator),
                      "discriminator": module_digest(world.discriminator)}}
    return json.loads(json.dumps(out))


def open_experiment(config: dict, world: AttackWorld, runs_dir: str | Path, name: str | None = None,
                    device: str = "auto", progress: bool = True, log: Callable[[str], None] = print) -> Experiment:
    """Create (or reopen, to resume) the run folder `runs_dir/<name>` for this config and world."""
    from ddcs_core.perceptual import resolve_device

    store = RunStore(runs_dir)
    run = store.create(name or config["name"], run_config(config, world), world.targets)
    return Experiment(run, world, config, resolve_device(device), progress, log)


def run_experiment(config_path: str | Path, runs_dir: str | Path = "runs", name: str | None = None,
                   device: str = "auto", progress: bool = True, log: Callable[[str], None] = print,
                   only: list[str] | None = None, overrides: list[str] | None = None) -> Run:
    """The CLI's `run`: the demo world, every step not yet done (or those in `only`), the run folder."""
    from ddcs_core.perceptual import resolve_device

    config = load_config(config_path, overrides)
    world = load_demo_world(config, resolve_device(device), progress)
    experiment = open_experiment(config, world, runs_dir, name, device, progress, log)
    experiment.run_all(only=only)
    return experiment.run


def _experiment_for(run: Run, device: str, progress: bool = False) -> Experiment:
    """Reopen an experiment run for a job: its own config, the demo world it records."""
    from ddcs_core.perceptual import resolve_device

    config = run.config
    if config.get("kind") != "experiment":
        raise DDCSInputError(f"{run.path}: not an experiment run (no attack config in config.json)")
    dev = resolve_device(device)
    world = load_demo_world(config["experiment"], dev, progress)
    if run_config(config["experiment"], world) != config:
        raise DDCSInputError(f"{run.path}: the demo world changed since this run was made")
    return Experiment(run, world, config["experiment"], dev, progress, log=lambda m: None)


def experiment_job(run: Run, params: dict, report: Report, cancelled: Callable[[], bool]) -> None:
    """Job: every step of the run not yet done (transfer, inversion, pools, evaluation, map, table)."""
    _experiment_for(run, params.get("device", "auto")).run_all(report, cancelled)


def transfer_job(run: Run, params: dict, report: Report, cancelled: Callable[[], bool]) -> None:
    """Job: transfer-learn the run's generator in mode params['mode'] (resumes; raises StepCancelled
    on cancel), then its FID at the fixed latents. params: mode, device (default auto)."""
    mode = params.get("mode")
    if mode not in MODES:
        raise DDCSInputError(f"parameter 'mode' must be one of {MODES}, got {mode!r}")
    experiment = _experiment_for(run, params.get("device", "auto"))
    if mode not in experiment.modes:
        raise DDCSInputError(f"mode {mode!r} is not among this run's transfer modes {experiment.modes}")
    experiment.run_step(f"transfer-{mode}", report, cancelled)
    experiment.run_step(f"fid-{mode}", report, cancelled)
    report(1.0, f"transfer {mode}: done")


def invert_job(run: Run, params: dict, report: Report, cancelled: Callable[[], bool]) -> None:
    """Job: invert the victim with generator params['generator'] ('pretrained', or a transfer mode), then build and evaluate its pools (and the dual pool once both sides exist)."""
    experiment = _experiment_for(run, params.get("device", "auto"))
    name = params.get("generator")
    if name not in experiment.generators():
        raise DDCSInputError(f"parameter 'generator' must be one of {experiment.generators()}, got {name!r}")
    experiment.run_step(f"invert-{name}", report, cancelled)
    experiment.run_step(f"evaluate-{pool_name(name)}")
    done = experiment.record()
    for mode in experiment.modes:
        if done.get(f"invert-{PRETRAINED}", {}).get("done") and done.get(f"invert-{mode}", {}).get("done"):
            experiment.run_step(f"dual-{mode}")
            experiment.run_step(f"evaluate-dual-{mode}")
    report(1.0, f"inversion with {name}: done")


# New runs from the app and the demo run ------------------------------------------------------------
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "configs" / "demo.yaml"
DEMO_RUN = "demo"


@dataclass(frozen=True)
class AttackSettings:
    """The main settings a user changes when starting an attack run from the app (the rest: demo.yaml)."""

    modes: tuple[str, ...] = MODES
    steps: int = 300
    lam: float = 0.03
    projection: str = "reference"
    k: int = 20
    mu: float = 1e-2
    final_per_class: int = 4
    classes: int = 0  # 0: every private identity
    seed: int = 0

    def apply(self, config: dict) -> dict:
        """`config` (a demo-style experiment config) with these settings written over it, re-validated."""
        raw = copy.deepcopy(config)
        raw["seed"] = self.seed
        for section in ("transfer", "inversion", "evaluation"):
            raw[section].pop("seed", None)  # re-derived from the new seed
        raw["transfer"].update(modes=list(self.modes), steps=self.steps, lam=self.lam, projection=self.projection,
                               k=self.k, mu=self.mu)
        raw["inversion"]["final_per_class"] = self.final_per_class
        raw["classes"] = "all" if self.classes == 0 else self.classes
        return resolve_config(raw, "attack settings")


def create_attack_run(runs_dir: str | Path, name: str, settings: AttackSettings | None = None,
                      base_config: str | Path | None = None, device: str = "auto", progress: bool = False) -> Run:
    """A new experiment run on the demo world: `base_config` (default demo.yaml) with `settings` over
    it (None: as is)."""
    config = load_config(base_config or DEMO_CONFIG)
    if settings is not None:
        config = settings.apply(config)
    config["name"] = name
    from ddcs_core.perceptual import resolve_device

    world = load_demo_world(config, resolve_device(device), progress)
    return open_experiment(config, world, runs_dir, name, device, progress, log=lambda m: None).run


def _run_modes(run: Run | None) -> list[str]:
    return list(((run.config if run is not None and run.exists() else {}).get("experiment") or {})
                .get("transfer", {}).get("modes", []))


def _run_generators(run: Run | None) -> list[str]:
    modes = _run_modes(run)
    return [PRETRAINED, *modes] if modes else []


_DEVICE = Param("device", "Device", "choice", default="auto", choices=devices)
register_job("attack", experiment_job, [_DEVICE],
             "Run (or resume) every remaining step of this attack run: transfer learning in each mode, "
             "inversion with every generator, the dual pools, their evaluation, the map and the table.")
register_job("transfer", transfer_job, [
    Param("mode", "Transfer mode", "choice", choices=_run_modes, help="vanilla | entropy | ngd, as the run defines them"),
    _DEVICE], "Transfer-learn the run's generator in one mode (resumes from its last checkpoint), then its FID.")
register_job("invert", invert_job, [
    Param("generator", "Generator", "choice", choices=_run_generators,
          help="pretrained: the world's generator (pool vanilla); a mode: its transferred generator"),
    _DEVICE], "Plug-and-Play inversion with one generator, then the evaluation of its pool and dual pool.")
