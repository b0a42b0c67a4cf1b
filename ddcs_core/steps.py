"""Resumable work as a small graph of named steps with one ledger of what is done.

A `Step(name, needs, fn)` is one unit of resumable work: `fn(report, should_stop)` does it (and keeps
its own partial state on disk, so a cancelled or killed step resumes), `needs` names the steps whose
outputs it reads. `StepGraph` runs steps in the order they were listed (which must respect `needs`),
skips those its `Ledger` records as done, and records each one as it finishes. The experiment run
(`<run>/steps.json`) and the demo-world build (`<work>/steps.json`) both go through it; cancellation
is one path, `control.Cancelled`, checked between steps here and inside long steps by their loops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ddcs_core import atomic, distributed
from ddcs_core.control import Log, Report, ShouldStop, never, silent, stop_point
from ddcs_core.errors import DDCSInputError

StepFn = Callable[[Report, ShouldStop], "dict | None"]  # may return more to record (e.g. its own "seconds")


@dataclass(frozen=True)
class Step:
    """One named unit of work and the steps whose outputs it reads."""

    name: str
    fn: StepFn
    needs: tuple[str, ...] = ()
    parallel: bool = False  # under torchrun every rank runs it (its share); else rank 0 alone, the others wait


class Ledger:
    """A JSON file of finished steps: name -> {"done": true, "seconds", "finished", ...extra}."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def entry(self, name: str, **match) -> dict | None:
        """The record of step `name` when done (and, if `match` is given, made with those values)."""
        entry = self.read().get(name)
        if not entry or not entry.get("done") or any(entry.get(k) != v for k, v in match.items()):
            return None
        return entry

    def done(self, name: str, **match) -> bool:
        return self.entry(name, **match) is not None

    def record(self, name: str, seconds: float, **extra) -> dict:
        """Mark `name` done (atomically, keeping the other entries)."""
        record = self.read()
        record[name] = {"done": True, "seconds": round(seconds, 2), **extra,
                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic.write_json(self.path, record)
        return record[name]


class StepGraph:
    """Steps in a valid order, run against one ledger."""

    def __init__(self, steps: Iterable[Step], ledger: Ledger, info: dict | None = None) -> None:
        self.steps: dict[str, Step] = {}
        for step in steps:
            if step.name in self.steps:
                raise ValueError(f"duplicate step {step.name!r}")
            missing = [n for n in step.needs if n not in self.steps]
            if missing:
                raise ValueError(f"step {step.name!r} needs {missing}, which are not listed before it")
            self.steps[step.name] = step
        self.ledger = ledger
        self.info = dict(info or {})  # recorded with every finished step (e.g. the device)

    @property
    def names(self) -> list[str]:
        return list(self.steps)

    def select(self, only: Sequence[str] | None) -> list[str]:
        """The steps named in `only` (all when None), in graph order; unknown names are refused."""
        if only is None:
            return self.names
        unknown = sorted(set(only) - set(self.steps))
        if unknown:
            raise DDCSInputError(f"unknown steps {unknown} (steps: {', '.join(self.steps)})")
        return [name for name in self.steps if name in only]

    def ready(self, name: str) -> bool:
        """Whether every step `name` needs is done."""
        return all(self.ledger.done(n) for n in self.steps[name].needs)

    def run(self, name: str, report: Report | None = None, should_stop: ShouldStop | None = None,
            **match) -> bool:
        """Run one step unless the ledger has it as done; True when it ran. A step whose needs are not
        done is refused with their names."""
        if name not in self.steps:
            raise DDCSInputError(f"unknown step {name!r} (steps: {', '.join(self.steps)})")
        if self.ledger.done(name, **match):
            return False
        missing = [n for n in self.steps[name].needs if not self.ledger.done(n)]
        if missing:
            raise DDCSInputError(f"step {name} needs {', '.join(missing)} first (not done yet)")
        t = time.perf_counter()
        extra = {}
        if self.steps[name].parallel or distributed.is_main():
            extra = dict(self.steps[name].fn(report or silent, should_stop or never) or {})
        seconds = extra.pop("seconds", time.perf_counter() - t)
        distributed.barrier()  # every rank's share is done (or rank 0's serial step)
        if distributed.is_main():
            self.ledger.record(name, seconds, **{**self.info, **match, **extra})
        distributed.barrier()  # the ledger says done before any rank reads it for the next step
        return True

    def run_all(self, report: Report | None = None, should_stop: ShouldStop | None = None,
                only: Sequence[str] | None = None, log: Log = lambda m: None) -> dict:
        """Every selected step not yet done, in order; `report` gets the fraction of the selection,
        `should_stop` is checked between steps and inside the long ones (Cancelled, state kept)."""
        say = report or silent
        names = self.select(only)
        for i, name in enumerate(names):
            stop_point(should_stop, f"run before step {name}")
            head = f"{i + 1}/{len(names)} {name}"
            say(i / len(names), head)
            if self.run(name, lambda f, m, i=i, head=head: say((i + f) / len(names), f"{head}: {m}"), should_stop):
                log(f"[run] {head}: done in {self.ledger.read()[name]['seconds']:.1f} s")
            else:
                log(f"[run] {head}: already done")
        say(1.0, "all steps done")
        return self.ledger.read()
