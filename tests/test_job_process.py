"""The app's jobs as torchrun subprocesses (`JobRunner(nproc=2)`, the app's `--nproc 2`), on CPU with gloo:
the same pools as the in-process job, progress and log from the subprocess, cancel and resume, failures.

The world is the custom one of test_custom_world (files a subprocess can load), with one transfer mode."""

import os
import time

import numpy as np
import pytest
import torch
import yaml

from ddcs_core import jobs
from ddcs_core.experiment import create_attack_run, steps_record
from ddcs_core.job_process import Command, ProcessFailed, alive, last_error, run_command
from ddcs_core.jobs import JobRunner, RunLock, read_status, register_job
from ddcs_core.runs import RunStore
from ddcs_core.ui.sample_run import build_sample_run
from tests.test_custom_world import world_dir  # noqa: F401  (the user's files of a tiny custom world)

CPU = {"device": "cpu"}


@pytest.fixture(scope="module")
def config(world_dir):  # noqa: F811
    raw = yaml.safe_load((world_dir / "byo.yaml").read_text())
    raw["name"] = "np"
    raw["transfer"].update(modes=["vanilla"], batch_size=8)  # 2 ranks x 1 whole minibatch-stddev group of 4
    raw["inversion"]["steps"] = 12  # classes long enough to cancel between them
    path = world_dir / "np.yaml"  # beside the world's files: its relative paths resolve there
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture()
def one_thread():
    """As each of the 2 workers on this 2-core machine (OMP_NUM_THREADS=1): the same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def follow(runner: JobRunner, run, timeout: float = 120) -> tuple[jobs.JobStatus, list[float]]:
    """Wait for the run's job, noting the progress it shows meanwhile."""
    seen, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        st = runner.status(run)
        seen.append(st.progress)
        if not st.active:
            return st, seen
        time.sleep(0.05)
    raise AssertionError(f"job still {runner.status(run).state} after {timeout} s")


def test_two_process_invert_job_equals_in_process_job_even_cancelled_and_restarted(config, tmp_path, monkeypatch,
                                                                                   deterministic_cpu):
    monkeypatch.setenv("DDCS_DETERMINISTIC", "1")  # the ranks' convolutions as this process's: bit for bit
    one = create_attack_run(tmp_path / "one", "np", base_config=config, device="cpu")
    two = create_attack_run(tmp_path / "two", "np", base_config=config, device="cpu")
    params = {"generator": "pretrained", **CPU}
    local = JobRunner()
    local.start(one, "invert", params)
    assert local.wait(one, 120).state == "done"

    runner = JobRunner(nproc=2)
    runner.start(two, "invert", params)
    scratch, end, before = two.path / "work" / "invert" / "vanilla", time.monotonic() + 120, []
    while not list(scratch.glob("class-*/final.pt")):  # a class is finished: cancel mid-inversion
        assert runner.status(two).active and time.monotonic() < end, runner.status(two).log[-20:]
        before.append(runner.status(two).progress)
        time.sleep(0.02)
    pid = runner.status(two).pid
    assert pid != os.getpid()  # the launcher's, as job.json records it for a restarted app
    assert runner.cancel(two)
    status = runner.wait(two, 60)
    assert status.state == "cancelled", status.log[-20:]
    assert not alive(pid) and not RunLock(two).taken()  # the processes are gone, the run unlocked
    assert not steps_record(two).get("invert-pretrained")
    finished = {p: p.stat().st_mtime_ns for p in scratch.glob("class-*/final.pt")}

    runner.start(two, "invert", params)  # resumes: finished classes are reloaded, not redone
    status, seen = follow(runner, two)
    assert status.state == "done", status.log[-20:]
    assert before == sorted(before) and seen == sorted(seen) and seen[-1] == 1.0  # progress rises
    assert any(0 < p < 1 for p in before + seen)  # the subprocess's own progress, not only start and end
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    text = "\n".join(status.log)
    assert "--nproc_per_node 2 -m ddcs_core run" in text and "[run] 1/2 invert-pretrained: done" in text
    # classes are seeded per class, not per rank: the pool of one uninterrupted process, bit for bit
    (ra, la), (rb, lb) = one.recon("vanilla"), two.recon("vanilla")
    assert np.array_equal(ra.images, rb.images) and np.array_equal(ra.labels, rb.labels) and np.array_equal(la, lb)
    ea, eb = one.evaluation("vanilla"), two.evaluation("vanilla")
    assert eb.report["distributed"]["world_size"] == 2 and ea.report["distributed"]["world_size"] == 1
    assert np.array_equal(ea.arrays["recon_assigned"], eb.arrays["recon_assigned"])
    np.testing.assert_allclose(eb.arrays["d_tar"], ea.arrays["d_tar"], rtol=1e-5)
    assert read_status(two).state == "done" and not RunLock(two).taken()  # released with the process


def test_two_process_evaluate_job_equals_in_process_job(tmp_path, one_thread):
    store = RunStore(tmp_path)
    runs = [build_sample_run(store, name, n_classes=3, per_class=4, recon_per_class=3, pools=("ngd",), grids=False,
                             evaluate=False) for name in ("one", "two")]
    params = {"pool": "ngd", "profile": "fast", "class_agnostic": True, **CPU}
    for run, runner, update_map in zip(runs, (JobRunner(), JobRunner(nproc=2)), (False, True)):
        runner.start(run, "evaluate", {**params, "update_map": update_map})
        status, _ = follow(runner, run)
        assert status.state == "done", status.log[-20:]
    assert any("map: up to date" in line for line in status.log)  # not shared: in the app's process, after
    ea, eb = (r.evaluation("ngd") for r in runs)
    assert eb.report["distributed"]["world_size"] == 2 and eb.report["config"]["class_agnostic"]
    assert np.array_equal(ea.arrays["recon_assigned"], eb.arrays["recon_assigned"])
    np.testing.assert_allclose(eb.arrays["d_tar"], ea.arrays["d_tar"], rtol=1e-5)
    assert eb.report["ddcs"] == pytest.approx(ea.report["ddcs"], rel=1e-5)
    assert runs[1].map() is not None


def test_kinds_without_a_command_run_in_process_and_say_so(config, tmp_path):
    run = create_attack_run(tmp_path, "np", base_config=config, device="cpu")
    register_job("test-local", lambda r, p, report, c: report(0.5, "local work"))
    try:
        runner = JobRunner(nproc=2)
        runner.start(run, "test-local")
        status = runner.wait(run, 10)
    finally:
        jobs._KINDS.pop("test-local", None)
    assert status.state == "done" and status.pid == os.getpid()
    assert "do not run distributed: --nproc 2 is ignored" in "\n".join(status.log)
    with pytest.raises(jobs.DDCSInputError, match="--nproc must be a whole number >= 1"):
        JobRunner(nproc=0)


def test_a_failing_process_fails_the_job_with_its_error_line(tmp_path):
    lines = []
    with pytest.raises(ProcessFailed, match=r"missing: no such file or folder \(exit code [1-9]"):
        run_command(Command(("evaluate", "--targets", str(tmp_path / "missing"), "--recon", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "out"))), 2, lambda f, m: None, lambda: False, lines.append)
    assert any(line.startswith("error: ") for line in lines)
    assert last_error(["x", "error: first", "Traceback", "ValueError: later"]) == "first"
    assert last_error(["Traceback (most recent call last):", "  File ...", "RuntimeError: boom",
                       "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: "]) == "RuntimeError: boom"


def test_app_option(tmp_path, capsys):
    import app

    assert app.parse_args([]).nproc == 1 and app.parse_args(["--nproc", "2"]).nproc == 2
    assert app.main(["--runs", str(tmp_path), "--nproc", "0"]) == 2
    assert "--nproc must be a whole number >= 1" in capsys.readouterr().err
