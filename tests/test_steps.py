"""The step graph: order and needs checked, one ledger, done steps skipped, one cancellation path."""

import json

import pytest

from ddcs_core.control import Cancelled
from ddcs_core.errors import DDCSInputError
from ddcs_core.steps import Ledger, Step, StepGraph


def graph(tmp_path, calls, stop_in=None):
    def fn(name):
        def run(report, should_stop):
            calls.append(name)
            report(0.5, "half")
            if name == stop_in and should_stop():
                raise Cancelled(f"{name} cancelled")
        return run
    steps = [Step("a", fn("a")), Step("b", fn("b"), ("a",)), Step("c", fn("c"), ("a", "b"))]
    return StepGraph(steps, Ledger(tmp_path / "steps.json"), info={"device": "cpu"})


def test_runs_in_order_records_and_skips_done(tmp_path):
    calls, seen = [], []
    g = graph(tmp_path, calls)
    record = g.run_all(report=lambda f, m: seen.append((round(f, 3), m)))
    assert calls == ["a", "b", "c"] and list(record) == ["a", "b", "c"]
    assert all(r["done"] and r["device"] == "cpu" for r in record.values())
    assert seen[1] == (round(0.5 / 3, 3), "1/3 a: half") and seen[-1] == (1.0, "all steps done")
    assert g.run_all() == json.loads((tmp_path / "steps.json").read_text()) and calls == ["a", "b", "c"]


def test_needs_select_and_cancel(tmp_path):
    calls = []
    g = graph(tmp_path, calls, stop_in="b")
    with pytest.raises(DDCSInputError, match="step b needs a first"):
        g.run("b")
    with pytest.raises(DDCSInputError, match=r"unknown steps \['z'\]"):
        g.run_all(only=["z"])
    g.run_all(only=["a"])
    assert g.ready("b") and not g.ready("c")
    with pytest.raises(Cancelled):  # inside a step
        g.run_all(should_stop=lambda: len(calls) == 2)
    assert not g.ledger.done("b")
    with pytest.raises(Cancelled, match="before step a"):  # between steps
        g.run_all(should_stop=lambda: True)
    g.run_all()
    assert calls == ["a", "b", "b", "c"]  # b again from its own saved state, a never twice


def test_graph_refuses_bad_order_and_ledger_matches_keys(tmp_path):
    with pytest.raises(ValueError, match="not listed before"):
        StepGraph([Step("b", lambda r, s: None, ("a",)), Step("a", lambda r, s: None)], Ledger(tmp_path / "x.json"))
    g = StepGraph([Step("a", lambda r, s: {"seconds": 7.0, "metrics": {"top1": 1}})], Ledger(tmp_path / "l.json"))
    assert g.run("a", config_hash="h1") and not g.run("a", config_hash="h1")
    assert g.ledger.entry("a", config_hash="h1")["seconds"] == 7.0 and not g.ledger.done("a", config_hash="h2")
    assert g.run("a", config_hash="h2")  # done for another config: runs again
