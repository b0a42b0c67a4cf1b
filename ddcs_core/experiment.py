"""The paper's experiment as one resumable run: transfer → inversion → pools → evaluation → table.

Steps (a steps.StepGraph: each recorded in `<run>/steps.json` when finished, so a rerun skips it):
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
finished pools. The config is a typed config.ExperimentConfig, parsed once at the edge (YAML, --set,
the app's form, or a run's config.json) and passed as is to every step.
Everything random is seeded from the config (noise, batches, latents, augmentations), and the
device is not part of the config, so a run resumed on another machine keeps its identity. A rerun
after a kill does exactly the work an uninterrupted run does: with deterministic kernels
(`torch.backends.mkldnn.enabled = False` on the CPU, as the tests run) the results are bit-identical;
with oneDNN's faster convolutions they agree to float rounding (oneDNN's summation order may depend
on memory layout, so latents can differ in the last bits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ddcs_core import atomic, distributed
from ddcs_core.attacks import AttackResult, InversionConfig, dual_pool, invert
from ddcs_core.config import ExperimentConfig, apply_override, load_config, parse_experiment
from ddcs_core.control import Cancelled, Log, Report, ShouldStop
from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import module_digest
from ddcs_core.home import repo_root
from ddcs_core.job_process import Command
from ddcs_core.jobs import Param, devices, register_job
from ddcs_core.models.train_gan import save_grid
from ddcs_core.pool_names import PRETRAINED, VANILLA_POOL, pool_name
from ddcs_core.runs import Run, RunStore
from ddcs_core.steps import Ledger, Step, StepGraph
from ddcs_core.transfer import MODES, TransferConfig, grid_latents, transfer, transfer_paths
from ddcs_core.worlds import AttackWorld, load_world

__all__ = ["AttackSettings", "AttackWorld", "Experiment", "ExperimentConfig", "StepCancelled", "apply_override",
           "create_attack_run", "load_config", "open_experiment", "parse_experiment", "run_experiment",
           "run_finished", "steps_record"]

STEPS_FILE = "steps.json"
StepCancelled = Cancelled  # kept for importers: a cancelled step raises control.Cancelled, its state kept


def _classes(config: ExperimentConfig, targets: ImageSet) -> list[int]:
    sel = config.classes
    if sel == "all":
        return list(range(len(targets.class_names)))
    if isinstance(sel, int):
        return list(range(min(sel, len(targets.class_names))))
    missing = [c for c in sel if c not in targets.class_names]
    if missing:
        raise DDCSInputError(f"classes {missing} are not among the targets' classes")
    return [targets.class_names.index(c) for c in sel]


class Experiment:
    """One run of the experiment: a step graph over a world, writing into a Run."""

    def __init__(self, run: Run, world: AttackWorld, config: ExperimentConfig, device: torch.device,
                 progress: bool = True, log: Log = print) -> None:
        self.run, self.world, self.config = run, world, config
        self.device, self.progress, self.log = device, progress, log
        self.modes: list[str] = list(config.modes)
        self.classes = _classes(config, world.targets)
        n = getattr(world.victim, "num_classes", None)
        if n is not None and n != len(world.targets.class_names):
            raise DDCSInputError(f"the victim has {n} classes but the targets have {len(world.targets.class_names)}")
        self.graph = StepGraph(self.steps(), Ledger(run.path / STEPS_FILE), info={"device": str(device)})

    # the graph -----------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """Pool by pool: the pre-trained generator's pool first, then each mode's."""
        def evaluate(pool: str, needs: str) -> Step:
            return Step(f"evaluate-{pool}", lambda r, s: self.evaluate_step(pool), (needs,), parallel=True)

        out = [Step(f"fid-{PRETRAINED}", lambda r, s: self.fid_step(PRETRAINED)),
               Step(f"invert-{PRETRAINED}", lambda r, s: self.invert_step(PRETRAINED, r, s), parallel=True),
               evaluate(VANILLA_POOL, f"invert-{PRETRAINED}")]
        for m in self.modes:
            out += [Step(f"transfer-{m}", lambda r, s, m=m: self.transfer_step(m, r, s), parallel=True),
                    Step(f"fid-{m}", lambda r, s, m=m: self.fid_step(m), (f"transfer-{m}",)),
                    Step(f"invert-{m}", lambda r, s, m=m: self.invert_step(m, r, s), (f"transfer-{m}",),
                         parallel=True),
                    evaluate(pool_name(m), f"invert-{m}"),
                    Step(f"dual-{m}", lambda r, s, m=m: self.dual_step(m), (f"invert-{PRETRAINED}", f"invert-{m}")),
                    evaluate(f"dual-{m}", f"dual-{m}")]
        # the map and the table cover the pools and generators that exist when they run
        out += [Step("map", self.map_step), Step("table", lambda r, s: self.table_step())]
        return out

    def record(self) -> dict:
        return self.graph.ledger.read()

    def generators(self) -> list[str]:
        return [PRETRAINED] + self.modes

    def run_step(self, name: str, report: Report | None = None, cancelled: ShouldStop | None = None) -> bool:
        """Run one step unless recorded as done; returns True when it ran."""
        return self.graph.run(name, report, cancelled)

    def run_all(self, report: Report | None = None, cancelled: ShouldStop | None = None,
                only: list[str] | None = None) -> dict:
        """Every step not yet done (or only those named in `only`), in order; `report` gets the whole
        run's fraction, `cancelled` is checked between steps and inside the long ones (Cancelled is
        raised, state kept)."""
        return self.graph.run_all(report, cancelled, only, self.log)

    # generators --------------------------------------------------------------------------------
    def generator(self, name: str) -> torch.nn.Module:
        if name == PRETRAINED:
            return self.world.generator.to(self.device).eval()
        from ddcs_core.models.checkpoints import load_model

        path = transfer_paths(self.run.path, name)["G"]
        if not path.is_file():
            raise DDCSInputError(f"{path}: the transfer step for mode {name!r} has not finished")
        G = load_model(path, device=self.device)[0]
        if self.world.generator_class is not None:  # a checkpoint keeps weights, not the conditioning
            G.set_class(self.world.generator_class)
        return G

    def transfer_step(self, mode: str, report: Report, cancelled: ShouldStop) -> None:
        transfer(self.world.generator, self.world.discriminator, self.world.victim, self.world.public,
                 self.config.transfer.for_mode(mode), self.run.path, device=self.device,
                 progress=self.progress, report=report, should_stop=cancelled)

    def fid_step(self, name: str) -> None:
        from ddcs_core.features import classifier_outputs
        from ddcs_core.metrics import fid, prediction_confidence
        from ddcs_core.perceptual import PerceptualDistance
        from ddcs_core.pipeline import generator_samples

        c = self.config.fid
        G = self.generator(name)
        if name == PRETRAINED:  # the starting point of every mode's grid, at the same fixed latents
            grid = self.config.transfer.for_mode(self.modes[0])
            with torch.no_grad():
                x = G(grid_latents(grid, G.z_dim).to(self.device), noise_mode="const")
            save_grid(self.run.path / "grids" / f"{PRETRAINED}.png", x, grid.grid)
        samples = generator_samples(G, c.samples, c.seed)
        public = self.world.public
        rng = np.random.default_rng(c.seed)
        real = public[rng.choice(len(public), size=min(c.samples, len(public)), replace=False)]
        metric = PerceptualDistance("alex", device=self.device)
        real_features = (metric.embed_cached(real) or metric.embed(real)).pooled  # the same subset for every generator
        value = fid(real_features, metric.embed(samples).pooled)
        with torch.no_grad():
            logits, _ = classifier_outputs(self.world.victim.to(self.device).eval(), samples, self.device)
        victim = prediction_confidence(logits)
        atomic.write_json(self.run.path / "generators" / f"{name}.json", {
            "generator": name, "fid": value, "features": metric.feature_name, "samples": c.samples,
            "victim_entropy": victim["entropy"], "victim_confidence": victim["confidence"],
            "latent_seed": c.seed, "against": f"{len(real)} public images", "noise_mode": "const",
            "note": "FID with the named LPIPS-backbone features at fixed latents, not Inception-v3"})

    # pools ----------------------------------------------------------------------------------------
    def invert_step(self, name: str, report: Report, cancelled: ShouldStop) -> None:
        pool = pool_name(name)
        victim = self.world.victim.to(self.device).eval()
        result = invert(self.generator(name), victim, self.classes, self.config.inversion, name=pool,
                        class_names=self.world.targets.class_names, work_dir=self.run.path / "work" / "invert" / pool,
                        progress=self.progress, report=report, should_stop=cancelled)
        if result is not None:  # None on torchrun ranks other than 0, which gathered the pool
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
        from ddcs_core.evaluate import evaluate_sets

        recon, _ = self.run.recon(pool)
        config = replace(self.config.evaluation, eval_model=self.world.evaluator_path, device=str(self.device))
        evaluation = evaluate_sets(self.world.targets, recon, config, progress=self.progress,
                                   eval_classifier=self.world.evaluator)
        if evaluation is not None:  # None on torchrun ranks other than 0, which merged the search
            self.run.write_evaluation(pool, evaluation)

    def map_step(self, report: Report, cancelled: ShouldStop) -> None:
        from ddcs_core.embedding_map import ensure_map

        ensure_map(self.run, device=str(self.device), report=report, cancelled=cancelled)

    def table_step(self) -> None:
        from ddcs_core.reproduce import reproduction_table, to_markdown

        rows = reproduction_table(self.run)
        atomic.write_json(self.run.path / "reproduction.json", rows)
        atomic.write_text(self.run.path / "reproduction.md", to_markdown(rows))


def step_names(config: ExperimentConfig | dict) -> list[str]:
    """The experiment's steps in the order `Experiment.run_all` runs them, from the config alone (the
    app's status line counts and times them without loading a world); `config` typed or as stored."""
    modes = config.transfer.modes if isinstance(config, ExperimentConfig) else config["transfer"]["modes"]
    names = [f"fid-{PRETRAINED}", f"invert-{PRETRAINED}", f"evaluate-{VANILLA_POOL}"]
    for m in modes:
        names += [f"transfer-{m}", f"fid-{m}", f"invert-{m}", f"evaluate-{pool_name(m)}", f"dual-{m}",
                  f"evaluate-dual-{m}"]
    return names + ["map", "table"]


def steps_record(run: Run) -> dict:
    """`<run>/steps.json`: each finished step with its time and device ({} before the first)."""
    return Ledger(run.path / STEPS_FILE).read()


def run_finished(run: Run) -> bool:
    """Whether every step of the experiment run is recorded as done (the table is the last one)."""
    return Ledger(run.path / STEPS_FILE).done("table")


def run_config(config: ExperimentConfig, world: AttackWorld) -> dict:
    """What config.json holds: the experiment (seeds included) and the world's provenance."""
    return {"kind": "experiment", "experiment": config.to_dict(), "world": dict(world.provenance),
            "models": {"victim": module_digest(world.victim), "generator": module_digest(world.generator),
                       "discriminator": module_digest(world.discriminator)}}


def stored_experiment(run: Run) -> ExperimentConfig:
    """The typed experiment of a run's config.json (runs written by earlier versions included)."""
    config = run.config
    if config.get("kind") != "experiment":
        raise DDCSInputError(f"{run.path}: not an experiment run (no attack config in config.json)")
    return parse_experiment(config.get("experiment") or {}, f"{run.path / 'config.json'}")


def _same_run(stored: dict, new: dict) -> bool:
    """Whether a stored config.json describes the same experiment on the same world as `new` (compared
    as typed configs, so a run written before a section gained keys still resumes)."""
    if any(stored.get(k) != new[k] for k in ("kind", "world", "models")):
        return False
    try:
        return parse_experiment(stored.get("experiment") or {}) == parse_experiment(new["experiment"])
    except DDCSInputError:
        return False


def open_experiment(config: ExperimentConfig, world: AttackWorld, runs_dir: str | Path, name: str | None = None,
                    device: str = "auto", progress: bool = True, log: Log = print) -> Experiment:
    """Create (or reopen, to resume) the run folder `runs_dir/<name>` for this config and world."""
    from ddcs_core.perceptual import resolve_device

    store, settings = RunStore(runs_dir), run_config(config, world)
    if distributed.is_main():  # under torchrun rank 0 makes the run folder, the other ranks then open it
        run = store.create(name or config.name, settings, world.targets, same=_same_run)
    distributed.barrier()
    if not distributed.is_main():
        run = store.create(name or config.name, settings, world.targets, same=_same_run)
    return Experiment(run, world, config, resolve_device(device), progress, log if distributed.is_main() else (lambda m: None))


def run_experiment(config: ExperimentConfig, runs_dir: str | Path = "runs", name: str | None = None,
                   device: str = "auto", progress: bool = True, log: Log = print,
                   only: list[str] | None = None, report: Report | None = None) -> Run:
    """The CLI's `run` of a config parsed once at the edge (`load_config`): the config's world, every step
    not yet done (or those in `only`), the run folder; `report` gets the fraction of the selected steps
    (an app job's subprocess: job_process)."""
    from ddcs_core.perceptual import resolve_device

    world = load_world(config.world, resolve_device(device), progress)
    experiment = open_experiment(config, world, runs_dir, name, device, progress, log)
    experiment.run_all(report, only=only)
    return experiment.run


def _experiment_for(run: Run, device: str, progress: bool = False) -> Experiment:
    """Reopen an experiment run for a job: its own config, the world it records."""
    from ddcs_core.perceptual import resolve_device

    config = stored_experiment(run)
    dev = resolve_device(device)
    world = load_world(config.world, dev, progress)
    now, then = run_config(config, world), run.config
    if now["world"] != then.get("world") or now["models"] != then.get("models"):
        raise DDCSInputError(f"{run.path}: the world ({config.world.kind}) changed since this run was made")
    return Experiment(run, world, config, dev, progress, log=lambda m: None)


def experiment_job(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
    """Job: every step of the run not yet done (transfer, inversion, pools, evaluation, map, table)."""
    _experiment_for(run, params.get("device", "auto")).run_all(report, cancelled)


def transfer_job(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
    """Job: transfer-learn the run's generator in mode params['mode'] (resumes; raises Cancelled
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


def invert_job(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
    """Job: invert the victim with generator params['generator'] ('pretrained', or a transfer mode), then build and evaluate its pools (and the dual pool once both sides exist)."""
    experiment = _experiment_for(run, params.get("device", "auto"))
    name = params.get("generator")
    if name not in experiment.generators():
        raise DDCSInputError(f"parameter 'generator' must be one of {experiment.generators()}, got {name!r}")
    experiment.run_step(f"invert-{name}", report, cancelled)
    experiment.run_step(f"evaluate-{pool_name(name)}")
    for mode in experiment.modes:
        if experiment.graph.ready(f"dual-{mode}"):
            experiment.run_step(f"dual-{mode}")
            experiment.run_step(f"evaluate-dual-{mode}")
    report(1.0, f"inversion with {name}: done")


# The same jobs as `run` commands, for the app's --nproc (torchrun subprocesses) --------------------------
def _run_command(run: Run, params: dict, only: list[str] | None = None) -> Command:
    """`python -m ddcs_core run` resuming this run: its own stored config (written for the command to read
    into the run's work folder), its store and name, the job's device, `only` these steps."""
    config = run.path / "work" / "job-config.json"
    atomic.write_json(config, run.config["experiment"])
    args = ["run", "--config", str(config), "--runs", str(run.path.parent), "--name", run.name,
            "--device", params.get("device", "auto"), "--quiet"]
    return Command(tuple(args + (["--only", ",".join(only)] if only else [])))


def attack_command(run: Run, params: dict) -> Command:
    """Every step not yet done, as `experiment_job`."""
    stored_experiment(run)  # refuses a run that is not an attack run, before any process starts
    return _run_command(run, params)


def transfer_command(run: Run, params: dict) -> Command:
    """transfer-<mode> and fid-<mode>, as `transfer_job`."""
    return _run_command(run, params, [f"transfer-{params['mode']}", f"fid-{params['mode']}"])


def invert_command(run: Run, params: dict) -> Command:
    """invert-<generator>, its pool's evaluation, and each dual pool whose other side is already inverted
    (as `invert_job`: the dual pools that become ready with this inversion)."""
    name, done = params["generator"], steps_record(run)
    steps = [f"invert-{name}", f"evaluate-{pool_name(name)}"]
    for mode in stored_experiment(run).modes:
        other = f"invert-{PRETRAINED}" if name == mode else f"invert-{mode}" if name == PRETRAINED else None
        if other is not None and done.get(other, {}).get("done"):
            steps += [f"dual-{mode}", f"evaluate-dual-{mode}"]
    return _run_command(run, params, steps)


# New runs from the app and the demo run ------------------------------------------------------------
DEMO_CONFIG = repo_root() / "assets" / "configs" / "demo.yaml"
DEMO_RUN = "demo"
_T, _I = TransferConfig, InversionConfig  # the form's defaults are the config classes' own


@dataclass(frozen=True)
class AttackSettings:
    """The main settings a user changes when starting an attack run from the app (the rest: demo.yaml)."""

    modes: tuple[str, ...] = MODES
    steps: int = _T.steps
    lam: float = _T.lam
    projection: str = _T.projection
    k: int = _T.k
    mu: float = _T.mu
    final_per_class: int = _I.final_per_class
    classes: int = 0  # 0: every private identity
    seed: int = 0

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """`config` with these settings written over it (sub-seeds re-derived from the seed), re-checked."""
        raw = config.to_dict()
        raw["seed"] = self.seed
        for section in ("transfer", "inversion", "evaluation"):
            raw[section].pop("seed", None)
        raw["transfer"].update(modes=list(self.modes), steps=self.steps, lam=self.lam, projection=self.projection,
                               k=self.k, mu=self.mu)
        raw["inversion"]["final_per_class"] = self.final_per_class
        raw["classes"] = "all" if self.classes == 0 else self.classes
        return parse_experiment(raw, "attack settings")


def create_attack_run(runs_dir: str | Path, name: str, settings: AttackSettings | None = None,
                      base_config: str | Path | None = None, device: str = "auto", progress: bool = False) -> Run:
    """A new experiment run: `base_config` (default demo.yaml) with `settings` over it (None: as is)."""
    from ddcs_core.perceptual import resolve_device

    config = load_config(base_config or DEMO_CONFIG)
    if settings is not None:
        config = settings.apply(config)
    config = replace(config, name=name)
    world = load_world(config.world, resolve_device(device), progress)
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
             "inversion with every generator, the dual pools, their evaluation, the map and the table.",
             command=attack_command)
register_job("transfer", transfer_job, [
    Param("mode", "Transfer mode", "choice", choices=_run_modes, help="vanilla | entropy | ngd, as the run defines them"),
    _DEVICE], "Transfer-learn the run's generator in one mode (resumes from its last checkpoint), then its FID.",
    command=transfer_command)
register_job("invert", invert_job, [
    Param("generator", "Generator", "choice", choices=_run_generators,
          help="pretrained: the world's generator (pool vanilla); a mode: its transferred generator"),
    _DEVICE], "Plug-and-Play inversion with one generator, then the evaluation of its pool and dual pool.",
    command=invert_command)
