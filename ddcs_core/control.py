"""How long work is followed and stopped: one progress callback type, one log line sink, one stop signal, one
exception.

Every long-running piece (a training loop, an inversion, the map, an experiment step, a job) takes
`report(fraction, message)` and `should_stop()`; when `should_stop()` turns true it saves what resumes
it and raises `Cancelled`. Jobs record a `Cancelled` as "cancelled", the CLI never sees one.
"""

from __future__ import annotations

from collections.abc import Callable

Report = Callable[[float, str], None]
Log = Callable[[str], None]  # where a long call writes its one-line notes (print by default)
ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """The user asked to stop; the state already on disk resumes the work on the next call."""


def silent(fraction: float, message: str) -> None:
    """A `Report` that reports nowhere."""


def never() -> bool:
    """A `ShouldStop` that never stops."""
    return False


def stop_point(should_stop: ShouldStop | None, what: str) -> None:
    """Raise `Cancelled` (naming `what`) if `should_stop()` is true; call where stopping loses nothing."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled; rerun to resume")
