"""The session's selections read from component values, and the typed status the app's timer compares."""

import copy
import pickle
from dataclasses import astuple, fields

import pytest

from ddcs_core.jobs import JobStatus
from ddcs_core.ui.session import FIELDS, Session, SessionInputs, Status

VALUES = ("run-a", "pool-dual", "All classes", "Matched", 2, 17, "detail", "pool-x", "pool-y", "pool-dual", 40)


def _job(state: str = "running", progress: float = 0.25, log: int = 3, id: str = "j1") -> JobStatus:
    return JobStatus(id, "attack", {}, state=state, progress=progress, log=[f"line {i}" for i in range(log)])


def test_session_round_trip_in_field_order():
    s = Session.from_values(VALUES)
    assert astuple(s) == VALUES and FIELDS == tuple(f.name for f in fields(Session))
    assert (s.run, s.page, s.target, s.tab, s.defense_n) == ("run-a", 2, 17, "detail", 40)
    with pytest.raises(ValueError):
        Session.from_values(VALUES[:-1])


def test_session_inputs_follow_the_field_order_whoever_binds_first():
    inputs = SessionInputs()
    components = {name: object() for name in FIELDS}
    inputs.bind(**{name: components[name] for name in reversed(FIELDS[5:])})
    with pytest.raises(ValueError, match="run, pool, label, status, page"):
        inputs.components
    inputs.bind(**{name: components[name] for name in FIELDS[:5]})
    assert inputs.components == [components[name] for name in FIELDS]
    with pytest.raises(ValueError, match="not session fields: colour"):
        inputs.bind(colour=object())


def test_status_changes_only_with_what_the_views_show():
    now = Status.of("run-a", _job(progress=0.1231), "stamp1")
    assert now == Status("run-a", "j1", "running", 0.123, 3, "stamp1")
    assert Status.of("run-a", _job(progress=0.1234), "stamp1") == now  # below what the views show
    assert Status.of("run-a", _job(progress=0.1236), "stamp1") != now
    assert Status.of("run-a", _job(progress=0.1231, log=4), "stamp1") != now
    assert Status.of("run-a", _job(progress=0.1231), "stamp2") != now
    assert Status.of("", None) == Status(None) and Status.of("run-a", None, "s") == Status("run-a", landed="s")
    assert copy.deepcopy(now) == now and pickle.loads(pickle.dumps(now)) == now  # as gr.State keeps it


def test_status_tells_landed_pools_and_finished_jobs():
    running = Status.of("run-a", _job(), "stamp1")
    assert Status.of("run-a", _job(), "stamp2").landed_since(running)
    assert not Status.of("run-b", _job(), "stamp2").landed_since(running)  # another run: not a landing
    assert not running.landed_since(None) and not running.landed_since(running)

    done = Status.of("run-a", _job("done", 1.0), "stamp1")
    assert done.finished_since(running) and Status.of("run-a", _job("failed"), "stamp1").finished_since(running)
    assert not done.finished_since(done) and not done.finished_since(None)
    assert not done.finished_since(Status.of("run-a", None, "stamp1"))  # no job was running
    assert not Status.of("run-a", _job("done", id="j2")).finished_since(running)  # another job
    assert not Status.of("run-b", _job("done")).finished_since(running)
    assert not Status.of("run-a", _job("running", 0.5)).finished_since(running)
