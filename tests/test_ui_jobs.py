"""The job runner: one job per run, progress and logs, cooperative cancel, status that survives a restart."""

import json
import threading

import pytest

from ddcs_core import jobs
from ddcs_core.errors import DDCSInputError
from ddcs_core.jobs import JobRunner, Param, job_kinds, read_status, register_job
from ddcs_core.runs import RunStore
from ddcs_core.ui.sample_run import build_sample_run


@pytest.fixture()
def run(tmp_path):
    return build_sample_run(RunStore(tmp_path), "tiny", n_classes=2, per_class=4, recon_per_class=3,
                            pools=("vanilla", "ngd"), grids=False, evaluate=False)


@pytest.fixture()
def gate():
    """A registered test kind that reports, then waits until released or cancelled."""
    release = threading.Event()
    started = threading.Event()

    def fn(run, params, report, cancelled):
        report(0.25, f"working on {params['pool']} x{params['steps']}")
        started.set()
        while not release.wait(0.02):
            if cancelled():
                raise jobs.JobCancelled()
        if params["fail"]:
            raise DDCSInputError("the input was bad")
        report(0.9, "almost")

    register_job("test-gate", fn, [
        Param("pool", "Pool", "choice", choices=lambda r: r.pools() if r else []),
        Param("steps", "Steps", "int", default=3, minimum=1, maximum=10),
        Param("fail", "Fail", "bool", default=False),
    ], "test only")
    yield release, started
    release.set()
    jobs._KINDS.pop("test-gate", None)


def test_one_job_per_run_with_progress_and_log(run, gate):
    release, started = gate
    runner = JobRunner()
    status = runner.start(run, "test-gate", {"pool": "ngd"})
    assert status.params == {"pool": "ngd", "steps": 3, "fail": False}
    assert started.wait(10)
    live = runner.status(run)
    assert live.state == "running" and live.progress == 0.25 and "working on ngd x3" in live.log[-1]
    with pytest.raises(DDCSInputError, match="already has a test-gate job"):
        runner.start(run, "test-gate", {"pool": "vanilla"})
    release.set()
    done = runner.wait(run, 10)
    assert done.state == "done" and done.progress == 1.0 and done.finished
    stored = json.loads((run.path / "job.json").read_text())
    assert stored["state"] == "done" and stored["id"] == done.id
    again = runner.start(run, "test-gate", {"pool": "vanilla", "steps": 2})
    assert again.id != done.id
    runner.wait(run, 10)


def test_cancel_is_recorded(run, gate):
    _, started = gate
    runner = JobRunner()
    runner.start(run, "test-gate", {"pool": "ngd"})
    assert started.wait(10)
    assert runner.cancel(run)
    status = runner.wait(run, 10)
    assert status.state == "cancelled" and any("cancel requested" in line for line in status.log)
    assert read_status(run).state == "cancelled"
    assert not runner.cancel(run)


def test_failures_are_messages(run, gate):
    release, _ = gate
    release.set()
    runner = JobRunner()
    runner.start(run, "test-gate", {"pool": "ngd", "fail": True})
    status = runner.wait(run, 10)
    assert status.state == "failed" and status.error == "the input was bad"

    def broken(run, params, report, cancelled):
        raise RuntimeError("boom")

    register_job("test-broken", broken)
    try:
        runner.start(run, "test-broken")
        status = runner.wait(run, 10)
        assert status.state == "failed" and "internal error (RuntimeError: boom)" in status.message
    finally:
        jobs._KINDS.pop("test-broken")


def test_status_survives_a_restart(run, gate):
    release, started = gate
    runner = JobRunner()
    runner.start(run, "test-gate", {"pool": "ngd"})
    assert started.wait(10)
    stored = json.loads((run.path / "job.json").read_text())
    assert stored["state"] == "running"
    stored["pid"] = 2**22 + 12345  # the process that ran it is gone
    (run.path / "job.json").write_text(json.dumps(stored))
    after_restart = JobRunner().status(run)
    assert after_restart.state == "interrupted" and after_restart.kind == "test-gate"
    release.set()
    runner.wait(run, 10)
    assert JobRunner().status(run).state == "done"


def test_parameters_are_checked(run, gate):
    runner = JobRunner()
    cases = [({"pool": "nope"}, "must be one of ngd, vanilla"), ({}, "'Pool' is required"),
             ({"pool": "ngd", "steps": 0}, "at least 1"), ({"pool": "ngd", "steps": 2.5}, "whole number"),
             ({"pool": "ngd", "steps": "many"}, "must be a number"), ({"pool": "ngd", "colour": 1}, "unknown parameter")]
    for params, message in cases:
        with pytest.raises(DDCSInputError, match=message):
            runner.start(run, "test-gate", params)
    with pytest.raises(DDCSInputError, match="unknown job kind"):
        runner.start(run, "nope", {})
    assert read_status(run) is None


def test_builtin_kinds_are_registered_with_their_parameters():
    kinds = job_kinds()
    assert {"evaluate", "map"} <= set(kinds)
    assert [p.name for p in kinds["evaluate"].params] == ["pool", "profile", "device", "class_agnostic", "update_map"]
    assert kinds["evaluate"].params[1].options(None) == ["paper", "fast", "official"]
    assert "cpu" in kinds["map"].params[1].options(None)


def test_evaluate_job_stores_the_evaluation(run):
    runner = JobRunner()
    runner.start(run, "evaluate", {"pool": "ngd", "profile": "fast", "device": "cpu", "update_map": False})
    status = runner.wait(run, 120)
    assert status.state == "done", status.message
    assert run.has_evaluation("ngd") and not run.has_evaluation("vanilla")
    assert any("stored: DDCS" in line for line in status.log)
    assert run.evaluation("ngd").report["counts"] == {"targets": 8, "reconstructions": 6, "target_classes": 2,
                                                      "reconstruction_classes": 2}


def test_map_job_with_pca(run):
    runner = JobRunner()
    runner.start(run, "map", {"method": "pca", "device": "cpu"})
    status = runner.wait(run, 120)
    assert status.state == "done", status.message
    assert str(run.map()["method"]) == "pca"


def test_job_modules_register_kinds_and_broken_ones_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "ddcs_test_kinds.py").write_text(
        "from ddcs_core.jobs import register_job\n"
        "register_job('test-plugin', lambda run, params, report, cancelled: None)\n")
    (tmp_path / "ddcs_test_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        loaded = jobs.load_job_modules(("ddcs_test_kinds", "ddcs_test_broken", "ddcs_test_missing"))
        assert loaded == ["ddcs_test_kinds"] and "test-plugin" in job_kinds()
    finally:
        jobs._KINDS.pop("test-plugin", None)


def test_a_bug_in_a_job_keeps_its_traceback_and_a_user_error_one_line(run):
    def buggy(run, params, report, cancelled):
        raise ZeroDivisionError("a bug")

    def bad_input(run, params, report, cancelled):
        raise DDCSInputError("pool 'x' is missing")

    runner = JobRunner()
    try:
        register_job("test-bug", buggy)
        register_job("test-input", bad_input)
        bug = (runner.start(run, "test-bug"), runner.wait(run, 10))[1]
        assert bug.state == "failed" and "internal error (ZeroDivisionError: a bug)" in bug.message
        assert any("Traceback" in line for line in bug.log) and any("in buggy" in line for line in bug.log)
        user = (runner.start(run, "test-input"), runner.wait(run, 10))[1]
        assert user.state == "failed" and user.error == "pool 'x' is missing"
        assert not any("Traceback" in line for line in user.log)
    finally:
        jobs._KINDS.pop("test-bug", None)
        jobs._KINDS.pop("test-input", None)


def test_cli_exit_codes_tell_user_errors_from_bugs(monkeypatch, capsys, caplog):
    from ddcs_core import __main__ as cli

    add = cli.COMMANDS["reproduce"][0]

    def input_error(args):
        raise DDCSInputError("--run x: not a run folder")

    monkeypatch.setitem(cli.COMMANDS, "reproduce", (add, input_error))
    assert cli.main(["reproduce", "--run", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --run x: not a run folder\n"

    def bug(args):
        raise KeyError("oops")

    monkeypatch.setitem(cli.COMMANDS, "reproduce", (add, bug))
    assert cli.main(["reproduce", "--run", "x"]) == 1
    (record,) = [r for r in caplog.records if r.name == "ddcs_core"]
    assert "internal error" in record.getMessage() and "KeyError: 'oops'" in caplog.text  # with its traceback
    assert record.exc_info[0] is KeyError
