"""A running job's compact status line, and when a step that a view waits for will be done.

Estimates come from the steps' own timings: the seconds every finished step took (`steps.json`),
and for the steps still to run, the same step's time in a reference run (the shipped demo run),
scaled by how fast this machine ran the steps both runs have done. A job without named steps
(evaluate, map) or a step without a reference time falls back to extrapolating the progress so far.
No gradio here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ddcs_core.jobs import JobStatus

# run_all reports "<i>/<n> <step>: <detail>" (i counts from 1)
STEP_HEAD = re.compile(r"^(\d+)/(\d+) ([A-Za-z0-9._+-]+)")
MIN_FRACTION = 0.05  # below this much progress an extrapolation says nothing
MIN_ELAPSED_S = 3.0
SCALE_RANGE = (0.1, 10.0)


@dataclass(frozen=True)
class JobLine:
    """What the status line says about an active job."""

    kind: str
    percent: int
    step: int | None  # 1-based index of the current step, when the job reports steps
    steps: int | None
    step_name: str
    eta_s: float | None  # seconds until the job is done, None when unknown


@dataclass(frozen=True)
class StepWait:
    """When a step the view needs will be done: its place in the running job and the seconds left."""

    step: int
    steps: int
    name: str
    eta_s: float | None


def parse_step(message: str) -> tuple[int, int, str] | None:
    m = STEP_HEAD.match(message or "")
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def _time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class _Plan:
    """Remaining seconds per step of a running step job, from the ledger and the reference times."""

    def __init__(self, status: JobStatus, names: list[str], record: dict, reference: dict[str, float],
                 now: datetime) -> None:
        head = parse_step(status.message)
        self.names = names
        self.current = head[0] - 1 if head and head[1] == len(names) and head[2] in names else None
        started = _time(status.started) or now
        finished = [t for t in (_time(s.get("finished", "")) for s in record.values()) if t and t >= started]
        self.step_elapsed = max(0.0, (now - max([started, *finished])).total_seconds())
        self.record = record
        ran = [n for n in record if record[n].get("done") and n in reference and reference[n] > 0]
        total_ref = sum(reference[n] for n in ran)
        scale = sum(float(record[n].get("seconds", 0)) for n in ran) / total_ref if total_ref else 1.0
        self.scale = min(max(scale, SCALE_RANGE[0]), SCALE_RANGE[1])
        self.reference = reference
        self.fraction = 0.0
        if self.current is not None:
            self.fraction = min(1.0, max(0.0, status.progress * len(names) - self.current))

    def expected(self, name: str) -> float | None:
        ref = self.reference.get(name)
        return None if ref is None else ref * self.scale

    def current_left(self) -> float | None:
        name = self.names[self.current]
        if self.fraction >= MIN_FRACTION and self.step_elapsed >= MIN_ELAPSED_S:
            return self.step_elapsed * (1 - self.fraction) / self.fraction
        expected = self.expected(name)
        return None if expected is None else max(expected - self.step_elapsed, 0.0)

    def until(self, index: int) -> float | None:
        """Seconds until step `index` (0-based) is done; None when a step on the way has no estimate."""
        if self.current is None or index < self.current:
            return None
        left = self.current_left()
        for name in self.names[self.current + 1:index + 1]:
            if self.record.get(name, {}).get("done"):
                continue
            expected = self.expected(name)
            if left is None or expected is None:
                return None
            left += expected
        return left


def _extrapolated(status: JobStatus, now: datetime) -> float | None:
    started = _time(status.started)
    if started is None or status.progress < MIN_FRACTION:
        return None
    elapsed = (now - started).total_seconds()
    return elapsed * (1 - status.progress) / status.progress if elapsed >= MIN_ELAPSED_S else None


def job_line(status: JobStatus | None, names: list[str] | None = None, record: dict | None = None,
             reference: dict[str, float] | None = None, now: datetime | None = None) -> JobLine | None:
    """The status line of an active job (None when no job is active). `names`: the job's steps in
    order, when it runs the experiment's steps; `record`: the run's steps.json; `reference`: seconds
    per step in a reference run."""
    if status is None or not status.active:
        return None
    now = now or datetime.now(timezone.utc)
    percent = int(round(100 * status.progress))
    head = parse_step(status.message)
    if names and head:
        plan = _Plan(status, names, record or {}, reference or {}, now)
        if plan.current is not None:
            eta = plan.until(len(names) - 1)
            return JobLine(status.kind, percent, head[0], head[1], head[2],
                           eta if eta is not None else _extrapolated(status, now))
    return JobLine(status.kind, percent, head[0] if head else None, head[1] if head else None,
                   head[2] if head else "", _extrapolated(status, now))


def step_wait(step: str, status: JobStatus | None, names: list[str] | None, record: dict | None = None,
              reference: dict[str, float] | None = None, now: datetime | None = None) -> StepWait | None:
    """When the active job will have finished the first step whose name is `step` or starts with it
    (e.g. 'evaluate-' for the first pool); None when no active job will run such a step."""
    if status is None or not status.active or not names:
        return None
    record = record or {}
    plan = _Plan(status, names, record, reference or {}, now or datetime.now(timezone.utc))
    if plan.current is None:
        return None
    for i, name in enumerate(names):
        if (name == step or (step.endswith("-") and name.startswith(step))) and not record.get(name, {}).get("done"):
            if i < plan.current:
                return None
            return StepWait(i + 1, len(names), name, plan.until(i))
    return None


def duration(seconds: float | None) -> str:
    """'about 40 s', 'about 6 min', 'about 1 h 20 min'; '' when unknown."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"about {max(5, 5 * round(s / 5))} s"
    if s < 3600:
        return f"about {round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"about {h} h {m} min" if m else f"about {h} h"
