"""The status line of a running job and the 'which step, and when' of views waiting for one: ETAs
from the steps' own timings, on made-up ledgers and on a real job over a sample run."""

import threading
from datetime import datetime, timedelta, timezone

import pytest

from ddcs_core.experiment import step_names
from ddcs_core.jobs import JobStatus, Param, register_job
from ddcs_core.runs import RunStore
from ddcs_core.ui import progress, render
from ddcs_core.ui.sample_run import build_sample_run
from ddcs_core.ui.views import Explorer

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
NAMES = step_names({"transfer": {"modes": ["ngd"]}})  # 11 steps: ... evaluate-vanilla (3) ... map (10), table
REFERENCE = {name: 100.0 for name in NAMES}


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def _status(message: str, fraction: float, state: str = "running") -> JobStatus:
    return JobStatus("j1", "attack", {}, state=state, progress=fraction, message=message, started=_at(0))


def test_step_names_follow_the_modes():
    assert NAMES[:3] == ["fid-pretrained", "invert-pretrained", "evaluate-vanilla"]
    assert NAMES[3:9] == ["transfer-ngd", "fid-ngd", "invert-ngd", "evaluate-transfer-ngd", "dual-ngd",
                          "evaluate-dual-ngd"]
    assert NAMES[-2:] == ["map", "table"] and len(NAMES) == 11


def test_eta_scales_the_reference_by_this_machines_speed():
    # two steps done, each twice as slow as the reference: every remaining step is expected at 200 s
    record = {"fid-pretrained": {"done": True, "seconds": 200.0, "finished": _at(200)},
              "invert-pretrained": {"done": True, "seconds": 200.0, "finished": _at(400)}}
    status = _status("3/11 evaluate-vanilla: LPIPS", 2 / 11)  # step 3 just started
    line = progress.job_line(status, NAMES, record, REFERENCE, now=T0 + timedelta(seconds=400))
    assert (line.step, line.steps, line.step_name, line.percent) == (3, 11, "evaluate-vanilla", 18)
    assert line.eta_s == pytest.approx(9 * 200.0)
    # the map (step 10) waits for steps 3..10
    wait = progress.step_wait("map", status, NAMES, record, REFERENCE, now=T0 + timedelta(seconds=400))
    assert (wait.step, wait.steps, wait.name) == (10, 11, "map") and wait.eta_s == pytest.approx(8 * 200.0)
    first_pool = progress.step_wait("evaluate-", status, NAMES, record, REFERENCE, now=T0 + timedelta(seconds=400))
    assert first_pool.name == "evaluate-vanilla" and first_pool.eta_s == pytest.approx(200.0)


def test_eta_inside_a_step_extrapolates_its_own_progress():
    record = {"fid-pretrained": {"done": True, "seconds": 100.0, "finished": _at(100)}}
    status = _status("2/11 invert-pretrained: chunk 1/4", (1 + 0.25) / 11)  # a quarter through step 2
    line = progress.job_line(status, NAMES, record, REFERENCE, now=T0 + timedelta(seconds=140))
    assert line.eta_s == pytest.approx(3 * 40.0 + 9 * 100.0)  # 40 s for a quarter: 120 s left, then 9 steps


def test_without_reference_or_steps_the_progress_is_extrapolated():
    status = JobStatus("j2", "evaluate", {}, state="running", progress=0.25, message="LPIPS", started=_at(0))
    line = progress.job_line(status, None, {}, {}, now=T0 + timedelta(seconds=30))
    assert line.step is None and line.eta_s == pytest.approx(90.0)
    early = JobStatus("j2", "evaluate", {}, state="running", progress=0.01, message="", started=_at(0))
    assert progress.job_line(early, None, now=T0 + timedelta(seconds=30)).eta_s is None
    assert progress.job_line(_status("done", 1.0, "done"), NAMES) is None  # only active jobs have a line
    gone = _status("11/11 table: writing", 10.5 / 11)
    assert progress.step_wait("map", gone, NAMES, {"map": {"done": True}}, REFERENCE) is None  # already made


def test_durations_and_the_rendered_line():
    assert [progress.duration(s) for s in (None, 3, 42, 359, 3600 + 20 * 60)] == \
        ["", "about 5 s", "about 40 s", "about 6 min", "about 1 h 20 min"]
    html = render.status_line(progress.JobLine("attack", 18, 3, 11, "evaluate-vanilla", 1800.0))
    assert "step 3/11 evaluate-vanilla" in html and "18 %" in html and "about 30 min left" in html
    assert render.status_line(None) == ""


@pytest.fixture()
def gate():
    return threading.Event()


def test_views_show_the_running_job_and_when_they_fill(tmp_path, gate):
    def stepping(run, params, report, cancelled):
        for i, name in enumerate(NAMES[:3]):
            report(i / len(NAMES), f"{i + 1}/{len(NAMES)} {name}")
        gate.wait(30)

    register_job("test-steps", stepping, [Param("x", "x", "int", default=0)])
    store = RunStore(tmp_path / "runs")
    sample = build_sample_run(store, "sample", n_classes=2, per_class=3, recon_per_class=2, evaluate=False)
    run = store.create("attack", {"kind": "experiment", "experiment": {"transfer": {"modes": ["ngd"]}}},
                       sample.targets())
    ex = Explorer(store.root, "cpu")
    ex.shipped_demo = None
    assert ex.status_line("attack") == "" and ex.waiting("attack", "map", "The map") is None
    ex.start_job("attack", "test-steps", {})
    try:
        for _ in range(100):
            if "step 3/11" in ex.status_line("attack"):
                break
            gate.wait(0.05)
        line = ex.status_line("attack")
        assert "test-steps" in line and "step 3/11 evaluate-vanilla" in line
        summary, gallery, label, _ = ex.targets_view("attack", None)
        assert "The first evaluated pool comes with step 3/11 (evaluate-vanilla)" in summary
        assert gallery.count("<img") == 6 and "Page 1 of 1" == label  # the targets, while the attack runs
        _, note = ex.map_view("attack", None)
        assert "The map comes with step 10/11 (map)" in note and "compute it" not in note
        html, _ = ex.defense_view("attack", None)
        assert "step 3/11" in html
        before = ex.landed("attack")
        run.write_recon("vanilla", sample.recon("vanilla")[0])
        assert ex.landed("attack") != before  # a landing pool changes what the timer compares
    finally:
        gate.set()
        ex.runner.wait(run, 10)
    assert ex.status_line("attack") == ""
