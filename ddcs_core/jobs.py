"""Background jobs on a run (evaluate, map, and whatever the attack code registers), one at a time per run.

A job is a function `fn(run, params, report, cancelled)` registered under a name with a small spec of
its parameters, so the app can draw a form for any kind without knowing it. Each job runs in its own
thread; `report(fraction, message)` feeds the progress bar and the log, and `cancelled()` turns true
when the user asks to stop (cancellation is cooperative: the job checks it between steps and raises
control.Cancelled, which is recorded as "cancelled"). A DDCSInputError is the user's mistake and is
logged as its one line; any other exception is a bug and its traceback goes to the job's log. The status
is written atomically to `<run>/job.json`, so a restarted app shows how the last job ended.

One job at a time per run holds across processes: every job, the app's and the CLI's `run`
(`exclusive_job`), takes an exclusive OS lock on `<run>/job.lock` (`RunLock`). The kernel drops the
lock when its process dies, so the lock of a killed process is simply taken over.

With `JobRunner(nproc=N)` (the app's `--nproc N`, N > 1) a kind registered with a `command` runs that CLI
command under torchrun with N processes instead of its function (ddcs_core/job_process.py: progress, log,
cancel, exit code, and how the lock is shared with the child); kinds without one run in-process as usual
and say so in their log.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ddcs_core import atomic, control, job_process
from ddcs_core.choices import MAP_METHODS
from ddcs_core.control import Report, ShouldStop
from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.runs import Run

log = logging.getLogger(__name__)

JobFn = Callable[[Run, dict, Report, ShouldStop], None]
CommandFn = Callable[[Run, dict], job_process.Command]  # the CLI command of a kind that runs distributed
Choices = Sequence[str] | Callable[[Run | None], Sequence[str]]

JOB_FILE = "job.json"
LOCK_FILE = "job.lock"
MAX_LOG_LINES = 1000
ACTIVE = ("queued", "running")
# Modules that register job kinds when imported (attack code); missing ones are skipped.
JOB_MODULES = ("ddcs_core.experiment",)


JobCancelled = control.Cancelled  # a job raises it after seeing `cancelled()`; the runner records 'cancelled'


@dataclass(frozen=True)
class Param:
    """One parameter of a job kind, enough for the app to draw and check an input for it."""

    name: str
    label: str
    type: str  # "choice" | "int" | "float" | "bool" | "text"
    default: Any = None
    choices: Choices | None = None
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def options(self, run: Run | None) -> list[str]:
        if self.choices is None:
            return []
        if callable(self.choices):
            return list(self.choices(run))  # run may be None: choices that depend on it then offer none
        return list(self.choices)

    def coerce(self, value: Any, run: Run | None) -> Any:
        """The value as the job function receives it; a bad one raises naming the parameter."""
        where = f"parameter '{self.label}'"
        if value is None or value == "":
            if self.default is None and self.type != "text":
                raise DDCSInputError(f"{where} is required")
            value = self.default
        if self.type == "choice":
            options = self.options(run)
            if str(value) not in options:
                raise DDCSInputError(f"{where} must be one of {', '.join(options) or '(none available)'}, got {value!r}")
            return str(value)
        if self.type == "bool":
            return bool(value)
        if self.type == "text":
            return "" if value is None else str(value)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DDCSInputError(f"{where} must be a number, got {value!r}") from None
        if not np.isfinite(number):
            raise DDCSInputError(f"{where} must be finite, got {value!r}")
        if self.type == "int":
            if number != int(number):
                raise DDCSInputError(f"{where} must be a whole number, got {value!r}")
            number = int(number)
        elif self.type != "float":
            raise DDCSInputError(f"{where} has an unknown type {self.type!r}")
        if self.minimum is not None and number < self.minimum:
            raise DDCSInputError(f"{where} must be at least {self.minimum}, got {number}")
        if self.maximum is not None and number > self.maximum:
            raise DDCSInputError(f"{where} must be at most {self.maximum}, got {number}")
        return number


@dataclass(frozen=True)
class JobKind:
    name: str
    fn: JobFn
    params: tuple[Param, ...]
    description: str = ""
    command: CommandFn | None = None

    def coerce(self, raw: dict, run: Run | None) -> dict:
        unknown = set(raw) - {p.name for p in self.params}
        if unknown:
            raise DDCSInputError(f"job '{self.name}': unknown parameter(s) {', '.join(sorted(unknown))}")
        return {p.name: p.coerce(raw.get(p.name), run) for p in self.params}


_KINDS: dict[str, JobKind] = {}


def register_job(kind: str, fn: JobFn, params: Sequence[Param] = (), description: str = "",
                 command: CommandFn | None = None) -> JobKind:
    """Make a job kind available to the app's Run view (re-registering a name replaces it). `command`:
    the CLI command (`python -m ddcs_core run|evaluate ...`) doing the same work, for runners with nproc > 1."""
    if not kind or not isinstance(kind, str):
        raise DDCSInputError(f"job kind must be a non-empty name, got {kind!r}")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise DDCSInputError(f"job '{kind}': duplicate parameter names {names}")
    _KINDS[kind] = JobKind(kind, fn, tuple(params), description, command)
    return _KINDS[kind]


def job_kinds() -> dict[str, JobKind]:
    return dict(_KINDS)


def load_job_modules(names: Sequence[str] = JOB_MODULES) -> list[str]:
    """Import the modules that register more job kinds; returns those loaded.

    A module that fails to import is logged and skipped: the app still serves, without its kinds.
    """
    loaded = []
    for name in names:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # a broken attack module must not keep the explorer from starting
            log.exception("job kinds of %s are unavailable: importing it failed", name)
            continue
        loaded.append(name)
    return loaded


@dataclass
class JobStatus:
    """What job.json holds: enough to show a finished or interrupted job after a restart."""

    id: str
    kind: str
    params: dict
    state: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    progress: float = 0.0
    message: str = ""
    log: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    error: str = ""
    pid: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @classmethod
    def from_dict(cls, data: dict) -> JobStatus:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def read_status(run: Run) -> JobStatus | None:
    """The last job of a run as stored; None when there was none or the file is unreadable."""
    path = run.path / JOB_FILE
    if not path.is_file():
        return None
    try:
        return JobStatus.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class RunLock:
    """The exclusive lock one job of a run holds (flock on <run>/job.lock; released when its process dies)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or refuse, naming the job that holds it."""
        self.run.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DDCSInputError(_busy_message(self.run)) from None
        self._fd = fd
        return self

    @property
    def fd(self) -> int | None:
        """The locked file's descriptor while held (a job process inherits it to keep the run locked)."""
        return self._fd

    def taken(self) -> bool:
        """Whether some process holds the lock (a try-lock fails); does not take it."""
        try:
            with RunLock(self.run):
                return False
        except DDCSInputError:
            return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _busy_message(run: Run) -> str:
    held = read_status(run)
    if held is not None and held.active:
        return (f"run {run.name} is busy: job '{held.kind}' (pid {held.pid}, started {held.started}) is running "
                "on it; wait for it to finish or cancel it, then try again")
    return f"run {run.name} is busy: another process holds its job lock ({run.path / LOCK_FILE}); try again later"


@contextmanager
def exclusive_job(run: Run, kind: str, params: dict) -> Iterator[None]:
    """Hold the run's job lock for work started outside the app (the CLI's `run`), and record it in
    job.json so the app shows it running and refuses to start another job beside it. Started by an
    app job that holds the lock already (job_process: the app's --nproc), it does neither; under torchrun,
    rank 0 alone holds it for all ranks."""
    from ddcs_core import distributed

    if not distributed.is_main() or job_process.parent_holds_lock(run.path, RunLock(run).taken):
        yield
        return
    with RunLock(run):
        status = JobStatus(uuid.uuid4().hex[:12], kind, params, state="running", started=_now(), pid=os.getpid())
        atomic.write_json(run.path / JOB_FILE, asdict(status))
        try:
            yield
        except KeyboardInterrupt:
            status.state, status.message = "cancelled", "interrupted from the terminal"
            raise
        except BaseException as exc:
            status.state, status.error = "failed", str(exc)
            status.message = f"failed: {exc}"
            raise
        else:
            status.state, status.progress, status.message = "done", 1.0, "done"
        finally:
            status.finished = _now()
            atomic.write_json(run.path / JOB_FILE, asdict(status))


class _Job:
    def __init__(self, run: Run, kind: JobKind, params: dict, run_lock: RunLock, nproc: int = 1) -> None:
        self.run = run
        self.run_lock = run_lock
        self.kind = kind
        self.nproc = nproc
        self.cancel_event = threading.Event()
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.status = JobStatus(uuid.uuid4().hex[:12], kind.name, params, started=_now(), pid=os.getpid())
        self.last_write = 0.0
        self.thread = threading.Thread(target=self._main, name=f"job-{kind.name}-{run.name}", daemon=True)

    def report(self, fraction: float, message: str) -> None:
        with self.lock:
            s = self.status
            s.progress = float(min(1.0, max(s.progress, fraction if np.isfinite(fraction) else 0.0)))
            if message and message != s.message:
                s.message = message
                s.log.append(f"[{time.strftime('%H:%M:%S')}] {message}")
                del s.log[:-MAX_LOG_LINES]
        self.persist(force=False)

    def log_line(self, line: str) -> None:
        """One line of the job's process output, into the log (not the status message)."""
        with self.lock:
            self.status.log.append(line)
            del self.status.log[:-MAX_LOG_LINES]
        self.persist(force=False)

    def process_started(self, pid: int) -> None:
        """The job's work now runs in process `pid` (what a restarted app checks for liveness)."""
        with self.lock:
            self.status.pid = pid
        self.persist()

    def _fn(self) -> JobFn:
        """The kind's function, or with nproc > 1 its CLI command under torchrun (when it has one)."""
        if self.nproc <= 1:
            return self.kind.fn
        if self.kind.command is None:
            self.report(0.0, f"'{self.kind.name}' jobs do not run distributed: --nproc {self.nproc} is ignored, "
                             "running in the app's process")
            return self.kind.fn
        command_of, nproc = self.kind.command, self.nproc

        def fn(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
            self.report(0.0, f"starting {nproc} processes (torchrun)")
            job_process.run_command(command_of(run, params), nproc, report, cancelled, self.log_line,
                                    started=self.process_started, lock_fd=self.run_lock.fd, lock_path=run.path)
        return fn

    def persist(self, force: bool = True) -> None:
        """Write job.json (throttled unless forced); writes are serialised so the last one is the newest."""
        with self.write_lock:
            now = time.monotonic()
            if not force and now - self.last_write < 0.5:
                return
            with self.lock:
                data = asdict(self.status)
            self.last_write = now
            try:
                atomic.write_json(self.run.path / JOB_FILE, data)
            except OSError as exc:
                log.warning("cannot write %s: %s", self.run.path / JOB_FILE, exc)

    def snapshot(self) -> JobStatus:
        with self.lock:
            return JobStatus.from_dict(json.loads(json.dumps(asdict(self.status))))

    def _finish(self, state: str, message: str, error: str = "") -> None:
        with self.lock:
            s = self.status
            s.state, s.finished, s.error = state, _now(), error
            if state == "done":
                s.progress = 1.0
            s.message = message
            s.log.append(f"[{time.strftime('%H:%M:%S')}] {message}")
        self.persist()

    def _main(self) -> None:
        try:
            self._work()
        finally:
            self.run_lock.release()

    def _work(self) -> None:
        with self.lock:
            self.status.state = "running"
        self.persist()
        try:
            self._fn()(self.run, dict(self.status.params), self.report, self.cancel_event.is_set)
        except control.Cancelled:
            self._finish("cancelled", "cancelled")
        except (DDCSInputError, job_process.ProcessFailed) as exc:  # one line; a process's output is in the log
            self._finish("failed", f"failed: {exc}", str(exc))
        except Exception as exc:  # a bug: it must not take the app down; the traceback goes to the job's log too
            log.exception("job %s on %s failed", self.kind.name, self.run.path)
            with self.lock:
                self.status.log.extend(traceback.format_exc().rstrip().splitlines())
            self._finish("failed", f"failed: internal error ({type(exc).__name__}: {exc})", f"{type(exc).__name__}: {exc}")
        else:
            if self.cancel_event.is_set():
                self._finish("cancelled", "cancelled")
            else:
                self._finish("done", "done")


class JobRunner:
    """Starts, follows and cancels jobs; at most one active job per run folder. With nproc > 1, kinds
    that have a CLI command run it under torchrun with nproc processes (the app's --nproc)."""

    def __init__(self, nproc: int = 1) -> None:
        if int(nproc) != nproc or nproc < 1:
            raise DDCSInputError(f"--nproc must be a whole number >= 1, got {nproc!r}")
        self.nproc = int(nproc)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def start(self, run: Run, kind: str, params: dict | None = None) -> JobStatus:
        """Start `kind` on `run` in the background; refused while another job of the run is active."""
        if kind not in _KINDS:
            raise DDCSInputError(f"unknown job kind {kind!r}; available: {', '.join(sorted(_KINDS)) or 'none'}")
        if not run.exists():
            raise DDCSInputError(f"{run.path}: not a run (no config.json)")
        spec = _KINDS[kind]
        values = spec.coerce(dict(params or {}), run)
        key = str(run.path.resolve())
        with self._lock:
            current = self.status(run)
            if current is not None and current.active:
                raise DDCSInputError(f"run {run.name} already has a {current.kind} job "
                                     f"{current.state}; wait for it to finish or cancel it first")
            run_lock = RunLock(run).acquire()  # a job of another process (the CLI) may hold it
            try:
                job = _Job(run, spec, values, run_lock, self.nproc)
                job.persist()
                job.thread.start()
            except BaseException:
                run_lock.release()
                raise
            self._jobs[key] = job
        return job.snapshot()

    def status(self, run: Run) -> JobStatus | None:
        """The run's current or last job; an active one left by a dead process reads 'interrupted'."""
        job = self._jobs.get(str(run.path.resolve()))
        if job is not None:
            return job.snapshot()
        stored = read_status(run)
        if stored is not None and stored.active and not _alive_elsewhere(stored.pid):
            stored.state = "interrupted"
            stored.message = "interrupted: the app stopped while this job ran"
        return stored

    def cancel(self, run: Run) -> bool:
        """Ask the run's active job to stop; False when none is active in this process."""
        job = self._jobs.get(str(run.path.resolve()))
        if job is None or not job.snapshot().active:
            return False
        job.cancel_event.set()
        job.report(0.0, "cancel requested; stopping after the current step")
        return True

    def wait(self, run: Run, timeout: float | None = None) -> JobStatus | None:
        job = self._jobs.get(str(run.path.resolve()))
        if job is not None:
            job.thread.join(timeout)
        return self.status(run)


def _alive_elsewhere(pid: int) -> bool:
    """Another live process owns the job (pid reuse aside); our own pid means a previous life of this app."""
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# built-in kinds ---------------------------------------------------------------------------------------
def devices(run: Run | None = None) -> list[str]:
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]


def _pools(run: Run | None) -> list[str]:
    return run.pools() if run is not None else []


def _evaluate_job(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
    """Evaluate one pool against the run's targets, store it, then bring the map up to date."""
    from ddcs_core.evaluate import EvalConfig, evaluate_sets

    pool = params["pool"]
    config = EvalConfig(profile=params["profile"], device=params["device"], class_agnostic=params["class_agnostic"])
    profile = config.resolved()
    report(0.02, f"loading the targets and pool {pool}")
    targets = run.targets()
    recon, _ = run.recon(pool)
    notes = []
    size = profile["size"] or recon.size[0]
    if recon.size[0] != recon.size[1] and not profile["size"]:
        raise DDCSInputError(f"pool {pool}: reconstructions are {recon.size[0]}x{recon.size[1]}, not square")
    if targets.size != (size, size):
        notes.append(f"targets resized (bilinear) from {targets.size[0]}x{targets.size[1]} to {size}x{size}")
        targets = resize_set(targets, size)
    if recon.size != (size, size):
        recon = resize_set(recon, size)
    control.stop_point(cancelled, f"evaluation of {pool}")
    report(0.08, f"LPIPS-{profile['net']} nearest-target search and metrics ({profile['name']} profile, "
                 f"{len(recon)} reconstructions x {len(targets)} targets)")
    ev = evaluate_sets(targets, recon, config, notes=notes)
    run.write_evaluation(pool, ev)
    r = ev.report
    for warning in r["warnings"]:
        report(0.7, f"warning: {warning}")
    report(0.7, f"stored: DDCS {r['ddcs']:.4g}, matched {r['matched']}/{r['counts']['targets']}, "
                f"coverage {_fmt(r['prdc'].get('coverage'))}")
    control.stop_point(cancelled, "the map")
    if params["update_map"]:
        _update_map(run, params["device"], lambda f, m: report(0.7 + 0.3 * f, m), cancelled)


def _update_map(run: Run, device: str, report: Report, cancelled: ShouldStop) -> None:
    """After an evaluation: the map brought up to date with the new pool (`report` from 0 to 1)."""
    from ddcs_core.embedding_map import ensure_map

    ensure_map(run, device=device, cancelled=cancelled, report=lambda f, m: report(f, f"map: {m}"))
    report(1.0, "map: up to date")


def _evaluate_command(run: Run, params: dict) -> job_process.Command:
    """The evaluate job as `python -m ddcs_core evaluate` on the run's files, written into the pool's
    folder as the job writes it; the map (not shared over processes) is then brought up to date here."""
    pool_dir = run.pool_dir(params["pool"])
    args = ["evaluate", "--targets", str(run.path / "targets.npz"), "--recon", str(pool_dir / "recon.npz"),
            "--out", str(pool_dir), "--profile", params["profile"], "--device", params["device"], "--quiet"]
    if params["class_agnostic"]:
        args.append("--class-agnostic")

    def then(report: Report, cancelled: ShouldStop) -> None:
        _update_map(run, params["device"], report, cancelled)

    return job_process.Command(tuple(args), then if params["update_map"] else None,
                               share=0.7 if params["update_map"] else 1.0)


def _map_job(run: Run, params: dict, report: Report, cancelled: ShouldStop) -> None:
    """(Re)compute the Map coordinates of every pool."""
    from ddcs_core.embedding_map import compute_map, ensure_map

    options = {"device": params["device"], "report": report, "cancelled": cancelled, "method": params["method"]}
    if params["force"]:
        compute_map(run, **options)
    else:
        ensure_map(run, **options)
        report(1.0, "map is up to date")


def resize_set(images: ImageSet, size: int) -> ImageSet:
    """A copy of an ImageSet at size x size (PIL bilinear), as the evaluation profiles expect."""
    from PIL import Image

    out = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images.images]) \
        if len(images) else np.zeros((0, size, size, 3), np.uint8)
    return ImageSet(out, images.labels, list(images.class_names), list(images.paths), images.source)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _profiles(run: Run | None = None) -> list[str]:
    from ddcs_core.evaluate import PROFILES

    return list(PROFILES)


register_job("evaluate", _evaluate_job, [
    Param("pool", "Pool", "choice", choices=_pools, help="reconstructions of the run to evaluate"),
    Param("profile", "Profile", "choice", default="fast", choices=_profiles,
          help="fast: LPIPS-alex at native size (CPU); paper: LPIPS-VGG at 256x256"),
    Param("device", "Device", "choice", default="auto", choices=devices),
    Param("class_agnostic", "Class-agnostic assignment", "bool", default=False,
          help="assign each reconstruction over all targets instead of its own class"),
    Param("update_map", "Update the map afterwards", "bool", default=True,
          help="recompute the Map's UMAP with this pool (the slow part on large runs)"),
], "Evaluate a pool against the run's targets (DDCS and the standard metrics), then update the map.",
   command=_evaluate_command)

register_job("map", _map_job, [
    Param("method", "Projection", "choice", default="umap", choices=MAP_METHODS,
          help="umap: the Map proper; pca: first two principal components, a quick look"),
    Param("device", "Device", "choice", default="auto", choices=devices),
    Param("force", "Recompute even if current", "bool", default=False),
], "Compute the UMAP coordinates of targets and reconstructions from their LPIPS embeddings.")
