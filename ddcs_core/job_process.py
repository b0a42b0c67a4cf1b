"""A job of the app run as `torchrun --nproc_per_node N -m ddcs_core <command>` (the app's `--nproc N`).

torch.distributed needs one process per rank, so a job that shares its work (an attack's steps, an
evaluation) runs the CLI's own command under PyTorch's launcher (`python -m torch.distributed.run
--standalone`, with this interpreter) instead of a function in the app's thread. The job kind says which
command (`jobs.register_job(..., command=...)`); this module runs it and feeds the job:

- Lock: the app's JobRunner takes the run's job lock before any job starts and releases it only after
  the launcher has exited. The launcher inherits the locked file (`pass_fds`), so the run stays locked
  while its work runs even if the app itself is killed. The child learns from `DDCS_JOB_LOCK_HELD=<run
  folder>` that its parent holds the lock: `jobs.exclusive_job` (the CLI `run`'s lock) then neither takes
  it again (it would find it busy and refuse) nor writes job.json (the parent's job owns it). It believes
  the variable only while the lock is in fact taken, so a stale variable never leaves a run unlocked.
- Progress: rank 0 writes `{"fraction", "message"}` to the file named by `DDCS_JOB_PROGRESS` at every
  report (atomic; reports come per step, chunk or class, so a few a second at most); the job polls it
  every 0.1 s. Every output line of every rank (stdout and stderr; the command runs with --quiet, so no progress bars)
  goes to the job's log.
- Cancel: SIGTERM to the launcher and to each worker (torchrun starts them in sessions of their own),
  SIGKILL after a grace period. Like any kill it loses nothing: a re-start resumes from what is saved.
- Exit: 0 is done; otherwise `ProcessFailed` with the last `error: ...` line (the CLI's one-line input
  error) or the last exception line of the output. Closing the app stops its job processes too.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ddcs_core import atomic, control
from ddcs_core.control import Log, Report, ShouldStop

PROGRESS_ENV = "DDCS_JOB_PROGRESS"
LOCK_ENV = "DDCS_JOB_LOCK_HELD"
GRACE_S = 15.0  # after SIGTERM, before SIGKILL
POLL_S = 0.1


class ProcessFailed(Exception):
    """The job's process exited non-zero; the message is its last error line (its output is in the log)."""


@dataclass(frozen=True)
class Command:
    """What a distributed job runs: `python -m ddcs_core ARGS` under torchrun, then optionally `then`
    in the app's process (work that is not shared, e.g. the map), which gets the progress after `share`."""

    args: tuple[str, ...]
    then: Callable[[Report, ShouldStop], None] | None = None
    share: float = 1.0


def torchrun_argv(args: Sequence[str], nproc: int) -> list[str]:
    """The launcher's command line: this interpreter, one node, `nproc` ranks, on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "ddcs_core", *args]


def run_command(command: Command, nproc: int, report: Report, cancelled: ShouldStop, log: Log,
                started: Callable[[int], None] = lambda pid: None, lock_fd: int | None = None,
                lock_path: Path | None = None) -> None:
    """Run `command` under torchrun with `nproc` ranks until it exits; see the module docstring.

    Raises control.Cancelled when `cancelled()` turned true (the processes are gone by then) and
    ProcessFailed when it exited non-zero."""
    with tempfile.TemporaryDirectory(prefix="ddcs-job-") as tmp:
        progress = Path(tmp) / "progress.json"
        env = {**os.environ, PROGRESS_ENV: str(progress), "PYTHONUNBUFFERED": "1"}
        if lock_path is not None:
            env[LOCK_ENV] = str(lock_path.resolve())
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        argv = torchrun_argv(command.args, nproc)
        log(f"$ {' '.join(argv[1:])}")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, text=True, errors="replace", start_new_session=True,
                                pass_fds=(lock_fd,) if lock_fd is not None else ())
        _LIVE.add(proc)
        try:
            started(proc.pid)
            tail: deque[str] = deque(maxlen=200)
            reader = threading.Thread(target=_read_lines, args=(proc, log, tail), daemon=True)
            reader.start()
            seen = None
            while proc.poll() is None:
                if cancelled():
                    stop(proc)
                    reader.join(5)
                    raise control.Cancelled("job process stopped; re-start the job to resume")
                seen = _forward_progress(progress, seen, report, command.share)
                time.sleep(POLL_S)
            reader.join(10)
            _forward_progress(progress, seen, report, command.share)
        finally:
            if proc.poll() is None:  # an error in this thread: the processes must not outlive the job
                stop(proc)
            _LIVE.discard(proc)
        if proc.returncode != 0:
            raise ProcessFailed(f"{last_error(tail) or 'no error message'} (exit code {proc.returncode})")
    if command.then is not None:
        control.stop_point(cancelled, "the job")
        share = command.share
        command.then(lambda f, m: report(share + (1 - share) * f, m), cancelled)


def _read_lines(proc: subprocess.Popen, log: Log, tail: deque) -> None:
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            log(line)


def _forward_progress(path: Path, seen: tuple | None, report: Report, share: float) -> tuple | None:
    try:
        data = json.loads(path.read_text())
        now = (float(data["fraction"]), str(data["message"]))
    except (OSError, ValueError, KeyError, TypeError):
        return seen
    if now != seen:
        report(share * now[0], now[1])
    return now


def last_error(lines: Sequence[str]) -> str:
    """The line that says why the command failed: its last `error: ...` line (an input error, without
    the prefix), else its last exception line (`SomeError: ...`) other than the launcher's own."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    for line in reversed(lines):
        head = line.split(":", 1)[0].strip()
        if head.endswith(("Error", "Exception")) and " " not in head and "ChildFailedError" not in head:
            return line.strip()
    return ""


def stop(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """End the launcher and its workers (each in a session of its own): SIGTERM, then SIGKILL."""
    workers = _children(proc.pid)
    for pid in [proc.pid, *workers]:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or any(alive(p) for p in workers)):
        time.sleep(0.1)
    for pid in [proc.pid, *workers]:
        _signal_group(pid, signal.SIGKILL)
    proc.wait()


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        found = " ".join(Path(f"/proc/{pid}/task/{t}/children").read_text() for t in tasks)
    except OSError:
        return []
    return [int(p) for p in found.split()]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_LIVE: set[subprocess.Popen] = set()


@atexit.register
def _stop_live() -> None:
    """Closing the app stops its job processes, as it stops its in-process jobs."""
    for proc in list(_LIVE):
        stop(proc, grace=5.0)


# the child's side -------------------------------------------------------------------------------------
def progress_report() -> Report | None:
    """A Report that writes to the parent job's progress file (None when not run by a job, or not rank 0)."""
    from ddcs_core import distributed

    path = os.environ.get(PROGRESS_ENV)
    if not path or not distributed.is_main():
        return None

    def report(fraction: float, message: str) -> None:
        try:
            atomic.write_json(Path(path), {"fraction": float(fraction), "message": str(message)})
        except (OSError, ValueError):
            pass  # progress is best effort; the work goes on

    return report


def parent_holds_lock(run_path: Path, busy: Callable[[], bool]) -> bool:
    """Whether this process was started by a job that holds `run_path`'s lock (`busy()`: the lock is taken)."""
    named = os.environ.get(LOCK_ENV)
    return bool(named) and Path(named) == run_path.resolve() and busy()
