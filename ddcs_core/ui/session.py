"""What one browser session has selected, and the job status the app's timer compares; no gradio.

Handlers read a `Session` from the values of the components named in `SessionInputs` (bound by the
tabs that own them, in the dataclass's field order), so no handler indexes a tuple of values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from ddcs_core.jobs import ACTIVE, JobStatus


@dataclass(frozen=True)
class Session:
    """The session's selections, passed to every handler that redraws views."""

    run: str | None
    pool: str | None
    label: str
    status: str
    page: int
    target: int | None
    tab: str
    pool_a: str | None
    pool_b: str | None
    defense_pool: str | None
    defense_n: int

    @classmethod
    def from_values(cls, values: Sequence) -> Session:
        """The session from its components' values, in field order (`SessionInputs.components`)."""
        return cls(**dict(zip(FIELDS, values, strict=True)))


FIELDS = tuple(f.name for f in fields(Session))


class SessionInputs:
    """The components a Session is read from: each tab binds its own while it builds, and the event
    wiring, which runs after every tab is built, asks for them all in field order."""

    def __init__(self) -> None:
        self._bound: dict[str, object] = {}

    def bind(self, **components: object) -> None:
        unknown = sorted(set(components) - set(FIELDS))
        if unknown:
            raise ValueError(f"not session fields: {', '.join(unknown)}")
        self._bound.update(components)

    @property
    def components(self) -> list:
        missing = [name for name in FIELDS if name not in self._bound]
        if missing:
            raise ValueError(f"no component bound for session fields: {', '.join(missing)}")
        return [self._bound[name] for name in FIELDS]


@dataclass(frozen=True)
class Status:
    """What the timer compares: the run's job (id, state, progress, log length) and the stamp of the
    run's files (`landed`, which changes when a pool or the map lands)."""

    run: str | None
    job: str | None = None
    state: str | None = None
    progress: float = 0.0
    log_len: int = 0
    landed: str = ""

    @classmethod
    def of(cls, run: str | None, job: JobStatus | None, landed: str = "") -> Status:
        """Progress is kept to 3 decimals, so the views refresh on visible steps, not on every report."""
        if job is None:
            return cls(run or None, landed=landed)
        return cls(run or None, job.id, job.state, round(job.progress, 3), len(job.log), landed)

    def landed_since(self, seen: Status | None) -> bool:
        """A pool or the map landed on the same run since `seen`: every view shows it."""
        return seen is not None and seen.run == self.run and seen.landed != self.landed

    def finished_since(self, seen: Status | None) -> bool:
        """The job that was queued or running at `seen`, on the same run, has ended."""
        return (seen is not None and seen.run == self.run and seen.job is not None and seen.job == self.job
                and seen.state in ACTIVE and self.state not in ACTIVE)
