"""A study over methods × λ × seeds: every point a normal experiment run, resumable point by point.

A sweep YAML names a base experiment config, the methods (a transfer mode plus `--set`-style
overrides: projection, ngd_scale, μ, ...), the λ grid, the seeds and whether each point also inverts:

    name: sweep-demo
    base: demo.yaml                 # an experiment config, relative to this file
    set: {transfer.steps: 150}      # overrides for every point (as --set section.key=value)
    methods:
      - {name: entropy, mode: entropy}
      - {name: ngd-spectral, mode: ngd, set: {transfer.ngd_scale: spectral}, lams: [0.03, 0.1]}
    lams: [0.003, 0.01, 0.03]       # a method's own `lams` replace these (a vanilla method: [0])
    seeds: [0, 1, 2]                # each point's experiment seed (transfer, inversion, evaluation)
    invert: false                   # true: also invert with the point's generator and evaluate its pool
    bootstrap: {resamples: 2000, seed: 0}

Layout in the run store (`--runs`):
    <store>/<name>.pretrained                 the pre-trained generator's FID, victim numbers and grid
                                              (and its inverted, evaluated pool): computed once, the reference
    <store>/<name>.<method>.lam<λ>.s<seed>    one run per point: transfer, grid, FID, victim numbers (+ pool)
    <store>/<name>/sweep.json                 the definition and its points; then table.csv, table.md,
                                              points.json, tradeoff.png, tradeoff.html (written at the end)
Each point runs only the experiment steps it needs (`transfer-<mode>`, `fid-<mode>`, and with
`invert` `invert-<mode>`, `evaluate-transfer-<mode>`) through its own step ledger, so a killed sweep
redoes nothing a finished step wrote; a rerun with more seeds or λs adds points and keeps the rest.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ddcs_core import atomic
from ddcs_core.config import (ExperimentConfig, apply_override, parse_experiment, preset_replaces_file,
                              resolve_world_paths)
from ddcs_core.control import Log
from ddcs_core.errors import DDCSInputError
from ddcs_core.pool_names import PRETRAINED, VANILLA_POOL, pool_name
from ddcs_core.runs import Run, RunStore, check_name
from ddcs_core.tradeoff import METRICS, aggregate
from ddcs_core.transfer import MODES

SWEEP_FILE = "sweep.json"
# set by the sweep itself (λ, seed, mode, name) or shared by every point so they stay comparable
_FIXED_KEYS = ("name", "seed", "world", "fid", "classes", "transfer.modes", "transfer.lam", "transfer.seed",
               "transfer.grid", "transfer.grid_seed")


@dataclass(frozen=True)
class Method:
    """A transfer mode with its settings: `overrides` maps `section.key` to a value, as --set would."""

    name: str
    mode: str
    overrides: tuple[tuple[str, object], ...]
    lams: tuple[float, ...]


@dataclass(frozen=True)
class Point:
    method: Method
    lam: float
    seed: int
    run: str
    config: ExperimentConfig


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    base: dict  # the experiment mapping after the sweep-level overrides
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    invert: bool
    resamples: int
    bootstrap_seed: int

    @property
    def reference_run(self) -> str:
        return f"{self.name}.{PRETRAINED}"

    def reference_config(self) -> ExperimentConfig:
        raw = _point_raw(self.base, (), self.methods[0].mode, self.methods[0].lams[0], self.seeds[0],
                         self.reference_run)
        return parse_experiment(raw, f"{self.source}: reference")

    def reference_steps(self) -> list[str]:
        return [f"fid-{PRETRAINED}"] + ([f"invert-{PRETRAINED}", f"evaluate-{VANILLA_POOL}"] if self.invert else [])

    def points(self) -> list[Point]:
        out = []
        for m in self.methods:
            for lam in m.lams:
                for seed in self.seeds:
                    run = check_name(f"{self.name}.{m.name}.lam{lam:g}.s{seed}")
                    raw = _point_raw(self.base, m.overrides, m.mode, lam, seed, run)
                    out.append(Point(m, lam, seed, run, parse_experiment(
                        raw, f"{self.source}: method {m.name}, lam {lam:g}, seed {seed}")))
        return out

    def point_steps(self, point: Point) -> list[str]:
        mode = point.method.mode
        steps = [f"transfer-{mode}", f"fid-{mode}"]
        return steps + ([f"invert-{mode}", f"evaluate-{pool_name(mode)}"] if self.invert else [])

    def to_dict(self) -> dict:
        return {"kind": "sweep", "name": self.name, "source": self.source, "base": self.base,
                "methods": [{"name": m.name, "mode": m.mode, "set": dict(m.overrides), "lams": list(m.lams)}
                            for m in self.methods],
                "seeds": list(self.seeds), "invert": self.invert,
                "bootstrap": {"resamples": self.resamples, "seed": self.bootstrap_seed},
                "reference": self.reference_run,
                "points": [{"method": p.method.name, "mode": p.method.mode, "lam": p.lam, "seed": p.seed, "run": p.run}
                           for p in self.points()]}


def _set(raw: dict, key: str, value: object, where: str) -> None:
    try:
        apply_override(raw, f"{key}={json.dumps(value)}")
    except DDCSInputError as e:
        raise DDCSInputError(f"{where}: {e}") from e


def _point_raw(base: dict, overrides, mode: str, lam: float, seed: int, run: str) -> dict:
    raw = copy.deepcopy(base)
    preset_replaces_file(raw, [f"{key}={json.dumps(value)}" for key, value in overrides])  # a preset beats the base
    for key, value in overrides:
        _set(raw, key, value, run)
    transfer = raw.setdefault("transfer", {})
    transfer.update(modes=[mode], lam=lam)
    for section in ("transfer", "inversion", "evaluation"):  # sub-seeds follow the point's seed
        if isinstance(raw.get(section), dict):
            raw[section].pop("seed", None)
    raw.update(seed=seed, name=run)
    return raw


def _numbers(value, what: str, kind: type) -> tuple:
    if not isinstance(value, list) or not value or any(
            not isinstance(v, (int, float) if kind is float else int) or isinstance(v, bool) for v in value):
        raise DDCSInputError(f"{what} must be a non-empty list of {'numbers' if kind is float else 'ints'}, got {value!r}")
    if len(set(value)) != len(value):
        raise DDCSInputError(f"{what} has repeated values: {value!r}")
    if kind is float and any(not math.isfinite(v) or v < 0 for v in value):
        raise DDCSInputError(f"{what} must be finite and >= 0, got {value!r}")
    return tuple(kind(v) for v in value)


def _overrides(value, where: str) -> tuple[tuple[str, object], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise DDCSInputError(f"{where}: 'set' must be a mapping of section.key: value, got {value!r}")
    return tuple((str(k), v) for k, v in value.items())


def parse_sweep(raw: dict, source: str, folder: Path, overrides: list[str] | None = None) -> Sweep:
    """The typed sweep of a YAML mapping; `folder` resolves a relative `base`, `overrides` (--set) go over
    every point's experiment. Every point's config is checked here, before any work starts."""
    if not isinstance(raw, dict):
        raise DDCSInputError(f"{source}: must be a mapping (name, base, methods, lams, seeds)")
    known = {"name", "base", "experiment", "set", "methods", "lams", "seeds", "invert", "bootstrap"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DDCSInputError(f"{source}: unknown sweep keys {unknown} (known: {sorted(known)})")
    name = check_name(raw.get("name", "sweep"), "sweep")
    if ("base" in raw) == ("experiment" in raw):
        raise DDCSInputError(f"{source}: give the experiment as 'base: <config.yaml>' or as an inline 'experiment:' mapping")
    if "base" in raw:
        path = Path(raw["base"])
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise DDCSInputError(f"{source}: base config {path} not found")
        base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        world_folder = path.resolve().parent  # a custom world's files are named relative to the base config
    else:
        base = copy.deepcopy(raw["experiment"])
        world_folder = folder.resolve()
    if not isinstance(base, dict):
        raise DDCSInputError(f"{source}: the base experiment must be a mapping of sections")
    for key, value in _overrides(raw.get("set"), source):
        _set(base, key, value, f"{source}: set")
    for item in overrides or []:
        apply_override(base, item)
    if isinstance(base.get("world"), dict):  # after the overrides, as load_config does
        base["world"] = resolve_world_paths(base["world"], world_folder)
    lams = _numbers(raw.get("lams", [0.03]), f"{source}: lams", float)
    seeds = _numbers(raw.get("seeds", [0]), f"{source}: seeds", int)
    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise DDCSInputError(f"{source}: methods must be a non-empty list of {{name, mode, set, lams}}")
    methods = []
    for i, m in enumerate(methods_raw):
        where = f"{source}: methods[{i}]"
        if not isinstance(m, dict) or set(m) - {"name", "mode", "set", "lams"} or "name" not in m or "mode" not in m:
            raise DDCSInputError(f"{where}: expected a mapping with name, mode and optional set, lams; got {m!r}")
        if m["mode"] not in MODES:
            raise DDCSInputError(f"{where}: mode must be one of {MODES}, got {m['mode']!r}")
        ov = _overrides(m.get("set"), where)
        fixed = [k for k, _ in ov if any(k == f or k.startswith(f + ".") for f in _FIXED_KEYS)]
        if fixed:
            raise DDCSInputError(f"{where}: {fixed} are set by the sweep or shared by every point (fixed: {list(_FIXED_KEYS)})")
        own = m.get("lams", [0] if m["mode"] == "vanilla" else None)
        methods.append(Method(check_name(str(m["name"]), "method"), m["mode"], ov,
                              lams if own is None else _numbers(own, f"{where}: lams", float)))
    if len({m.name for m in methods}) != len(methods):
        raise DDCSInputError(f"{source}: method names must be distinct")
    boot = raw.get("bootstrap") or {}
    if not isinstance(boot, dict) or set(boot) - {"resamples", "seed"}:
        raise DDCSInputError(f"{source}: bootstrap must be a mapping of resamples, seed")
    resamples, bseed = boot.get("resamples", 2000), boot.get("seed", 0)
    if not isinstance(resamples, int) or resamples < 100 or not isinstance(bseed, int):
        raise DDCSInputError(f"{source}: bootstrap.resamples must be an int >= 100 and bootstrap.seed an int")
    invert = raw.get("invert", False)
    if not isinstance(invert, bool):
        raise DDCSInputError(f"{source}: invert must be true or false, got {invert!r}")
    sweep = Sweep(name, source, base, tuple(methods), seeds, invert, resamples, bseed)
    sweep.points()  # every point's experiment config is valid before anything runs
    sweep.reference_config()
    return sweep


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """A sweep YAML file (see the module docstring), with `overrides` over every point's experiment."""
    path = Path(path)
    if not path.is_file():
        raise DDCSInputError(f"--config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DDCSInputError(f"--config {path}: not valid YAML ({e})") from e
    return parse_sweep(raw, str(path), path.parent, overrides)


def run_sweep(sweep: Sweep, runs_dir: str | Path, device: str = "auto", progress: bool = False,
              log: Log = print) -> Path:
    """Every point not yet done (the reference first), then the table and plots; the sweep folder.

    Under torchrun every rank goes through the points in the same order and shares each point's work
    (as `run` does; opening a point synchronises the ranks); rank 0 alone writes the sweep's files,
    links the targets, logs and holds the job lock."""
    from ddcs_core import distributed
    from ddcs_core.experiment import open_experiment
    from ddcs_core.jobs import exclusive_job
    from ddcs_core.perceptual import resolve_device
    from ddcs_core.worlds import load_world

    folder = Path(runs_dir) / sweep.name
    if (folder / "config.json").is_file():
        raise DDCSInputError(f"{folder} is a run, not a sweep: pick another sweep name")
    main = distributed.is_main()
    if main:
        atomic.write_json(folder / SWEEP_FILE, sweep.to_dict())
    else:
        log = lambda m: None  # noqa: E731 - rank 0 logs for all
    reference = sweep.reference_config()
    world = load_world(reference.world, resolve_device(device), progress)
    quiet = lambda m: None  # noqa: E731 - the sweep logs per point
    points = sweep.points()
    jobs = [(reference, sweep.reference_run, sweep.reference_steps(), "reference")]
    jobs += [(p.config, p.run, sweep.point_steps(p), f"point {i + 1}/{len(points)}") for i, p in enumerate(points)]
    shared = Path(runs_dir) / sweep.reference_run / "targets.npz"
    for config, run, steps, label in jobs:
        if main:
            _link_targets(shared, Path(runs_dir) / run)
        exp = open_experiment(config, world, runs_dir, run, device, progress, quiet)
        todo = [s for s in steps if not exp.graph.ledger.done(s)]
        log(f"[sweep] {label} {run}: " + (f"running {', '.join(todo)}" if todo else "done before"))
        with exclusive_job(exp.run, "sweep (CLI)", {"sweep": sweep.name, "steps": ",".join(steps), "device": device}):
            exp.run_all(only=steps)  # under the app's job lock: never two jobs on one run
    if main:
        write_outputs(folder, runs_dir)
        log(f"[sweep] {folder}: table.csv, table.md, tradeoff.png, tradeoff.html")
    return folder


def _link_targets(shared: Path, run: Path) -> None:
    """A point's targets.npz as a hard link to the reference's (36 MB saved per point on the demo world;
    files are replaced, never modified, so the link is safe); where links fail the run writes its own."""
    if shared.is_file() and not (run / "targets.npz").exists():
        run.mkdir(parents=True, exist_ok=True)
        try:
            os.link(shared, run / "targets.npz")
        except OSError:
            pass


# reading the points back ------------------------------------------------------------------------------
def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _generator_numbers(run: Run, generator: str, pool: str) -> dict:
    info = _json(run.path / "generators" / f"{generator}.json") or {}
    out = {"gen_fid": info.get("fid"), "victim_confidence": info.get("victim_confidence"),
           "victim_entropy": info.get("victim_entropy"), "features": info.get("features")}
    if run.exists() and run.has_evaluation(pool):
        r = run.evaluation(pool).report
        out.update(ddcs=r["ddcs"], coverage=r["prdc"].get("coverage"), acc1=(r.get("attack_accuracy") or {}).get("top1"))
    return out


def sweep_results(folder: str | Path, runs_dir: str | Path | None = None) -> dict:
    """{'sweep', 'reference', 'points', 'means'} of a sweep folder: every point whose FID exists (an
    unfinished sweep gives the finished points), the per-(method, λ) means with their intervals."""
    folder = Path(folder)
    spec = _json(folder / SWEEP_FILE)
    if not spec or spec.get("kind") != "sweep":
        raise DDCSInputError(f"{folder}: not a sweep folder (no {SWEEP_FILE})")
    store = RunStore(runs_dir if runs_dir is not None else folder.parent)
    ref_run = store.run(spec["reference"])
    reference = {"run": ref_run.name, "grid": str(ref_run.path / "grids" / f"{PRETRAINED}.png"),
                 **_generator_numbers(ref_run, PRETRAINED, VANILLA_POOL)}
    points = []
    for p in spec["points"]:
        run = store.run(p["run"])
        numbers = _generator_numbers(run, p["mode"], pool_name(p["mode"]))
        if numbers["gen_fid"] is None:
            continue
        summary = _json(run.path / "transfer" / p["mode"] / "summary.json") or {}
        points.append({**p, **numbers, "sec_per_step": summary.get("sec_per_step"),
                       "grid": str(run.path / "grids" / f"{p['mode']}.png")})
    boot = spec.get("bootstrap", {})
    means = aggregate(points, boot.get("resamples", 2000), boot.get("seed", 0))
    return {"sweep": spec, "reference": reference, "points": points, "means": means}


# writing the table and plots ---------------------------------------------------------------------------
_CSV = ("row", "method", "mode", "lam", "seed", "n", "run", *(c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")),
        "pareto")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_csv(results: dict) -> str:
    """One row per point, one per (method, λ) mean with its 95 % interval, and the reference."""
    out = io.StringIO()
    w = csv.DictWriter(out, _CSV, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    ref = results["reference"]
    w.writerow({k: _cell(v) for k, v in {"row": "reference", "method": PRETRAINED, **ref}.items()})
    for p in results["points"]:
        w.writerow({k: _cell(v) for k, v in {"row": "point", "n": 1, **p}.items()})
    for m in results["means"]:
        w.writerow({k: _cell(v) for k, v in {"row": "mean", **m, "seed": " ".join(map(str, m["seeds"]))}.items()})
    return out.getvalue()


def _fmt(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric in ("victim_confidence", "coverage", "acc1"):
        return f"{100 * value:.1f} %"
    return f"{value:.4f}" if metric == "ddcs" else f"{value:.2f}"


def _interval(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    mean = _fmt(row.get(metric), metric)
    if low is None or math.isnan(low):
        return mean
    return f"{mean} [{_fmt(low, metric)}, {_fmt(high, metric)}]"


def to_markdown(results: dict) -> str:
    """The means with their 95 % bootstrap intervals (Pareto rows marked), then every point."""
    metrics = [m for m in METRICS if any(p.get(m) is not None for p in results["points"])] or ["gen_fid"]
    titles = {"gen_fid": "Gen. FID ↓", "victim_confidence": "Victim conf. ↑", "victim_entropy": "Victim entropy ↓",
              "ddcs": "DDCS ↑", "coverage": "Coverage ↑", "acc1": "Attack acc@1 ↑"}
    ref = results["reference"]
    head = "| Method | λ | Seeds | " + " | ".join(titles[m] for m in metrics) + " | Pareto |"
    lines = [f"Sweep `{results['sweep']['name']}`: mean over seeds [95 % bootstrap interval, "
             f"{results['sweep']['bootstrap']['resamples']} resamples]; Pareto: on the method's front "
             "(lower FID, higher victim confidence).", "", head, "|" + "---|" * (len(metrics) + 4)]
    lines.append(f"| {PRETRAINED} | — | — | " + " | ".join(_fmt(ref.get(m), m) for m in metrics) + " | |")
    for r in results["means"]:
        lines.append(f"| {r['method']} | {r['lam']:g} | {r['n']} | " + " | ".join(_interval(r, m) for m in metrics)
                     + f" | {'★' if r.get('pareto') else ''} |")
    lines += ["", "| Method | λ | Seed | " + " | ".join(titles[m] for m in metrics) + " | Run |",
              "|" + "---|" * (len(metrics) + 4)]
    for p in results["points"]:
        lines.append(f"| {p['method']} | {p['lam']:g} | {p['seed']} | " + " | ".join(_fmt(p.get(m), m) for m in metrics)
                     + f" | {p['run']} |")
    features = sorted({p["features"] for p in results["points"] if p.get("features")})
    lines += ["", f"Gen. FID: fixed latents vs public images, features {', '.join(features) or '—'}; victim "
              "confidence and entropy: the victim on the same samples."]
    return "\n".join(lines) + "\n"


def _plain(value):
    """`value` with NaN as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_outputs(folder: str | Path, runs_dir: str | Path | None = None) -> dict:
    """table.csv, table.md, points.json, tradeoff.png and tradeoff.html of a sweep folder (from its runs)."""
    from ddcs_core.sweep_plots import plotly_figure, write_png

    folder = Path(folder)
    results = sweep_results(folder, runs_dir)
    if not results["points"]:
        raise DDCSInputError(f"{folder}: no point of this sweep has finished yet")
    atomic.write_text(folder / "table.csv", to_csv(results))
    atomic.write_text(folder / "table.md", to_markdown(results))
    atomic.write_json(folder / "points.json", _plain(results))
    atomic.write_text(folder / "tradeoff.html", plotly_figure(results).to_html(include_plotlyjs=True, full_html=True))
    write_png(results, folder / "tradeoff.png")
    return results
