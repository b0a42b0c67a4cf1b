import numpy as np
import pytest

from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.evaluate import EvalConfig, evaluate_sets
from ddcs_core.runs import RunStore, check_name


def _set(n, seed, source):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return ImageSet(imgs, np.arange(n, dtype=np.int64) % 2, ["a", "b"], [f"{source}/{i}.png" for i in range(n)], source)


def test_run_round_trip(tmp_path):
    store = RunStore(tmp_path)
    targets, recon = _set(6, 0, "t"), _set(5, 1, "r")
    run = store.create("demo", {"seed": 1}, targets)
    run.write_recon("vanilla", recon, np.ones((5, 4)))
    run.write_evaluation("vanilla", evaluate_sets(targets, recon, EvalConfig()))
    again = RunStore(tmp_path).runs()[0]
    assert again.name == "demo" and again.pools() == ["vanilla"] and again.config == {"seed": 1}
    np.testing.assert_array_equal(again.targets().images, targets.images)
    images, latents = again.recon("vanilla")
    assert images.paths == recon.paths and latents.shape == (5, 4)
    ev = again.evaluation("vanilla")
    assert ev.arrays["d_tar"].shape == (6,) and ev.report["counts"]["targets"] == 6
    assert again.map() is None


def test_names_and_paths_are_confined(tmp_path):
    run = RunStore(tmp_path).create("r1", {}, _set(2, 0, "t"))
    for bad in ("../x", "a/b", "", ".hidden", "x" * 101):
        with pytest.raises(DDCSInputError):
            check_name(bad)
    with pytest.raises(DDCSInputError, match="outside"):
        run.safe_path("../../etc/passwd")
    assert run.safe_path("grids/a.png").is_relative_to(run.path.resolve())
    with pytest.raises(DDCSInputError, match="different config"):
        RunStore(tmp_path).create("r1", {"other": 1}, _set(2, 0, "t"))
    with pytest.raises(DDCSInputError, match="not been evaluated"):
        run.evaluation("nothing")


def _hold_lock_in_another_process(run_path):
    """A process that holds the run's job lock as the CLI's `run` does, until killed."""
    import subprocess
    import sys

    code = ("import sys, time; from ddcs_core.jobs import exclusive_job; from ddcs_core.runs import Run\n"
            "with exclusive_job(Run(sys.argv[1]), 'run (CLI)', {}):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_cli_run_and_app_jobs_share_one_lock_and_take_over_stale_ones(tmp_path, capsys):
    from ddcs_core.__main__ import main
    from ddcs_core.jobs import JobRunner, RunLock, read_status

    run = RunStore(tmp_path).create("demo", {"seed": 1}, _set(2, 0, "t"))
    holder = _hold_lock_in_another_process(run.path)
    try:
        args = ["run", "--config", "assets/configs/demo.yaml", "--runs", str(tmp_path), "--name", "demo", "--quiet"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"run demo is busy: job 'run (CLI)' (pid {holder.pid}" in err and err.count("\n") == 1
        with pytest.raises(DDCSInputError, match="busy|already has a run \\(CLI\\) job"):
            JobRunner().start(run, "map", {})
        with pytest.raises(DDCSInputError, match="busy"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert read_status(run).state == "running"  # the killed process could not record its end
    with RunLock(run):  # the kernel dropped the dead process's lock: it is taken over
        assert JobRunner().status(run).state == "interrupted"
    lock = RunLock(run).acquire()
    try:
        with pytest.raises(DDCSInputError, match="busy"):
            JobRunner().start(run, "map", {})  # an app job is refused while the lock is held in this process too
    finally:
        lock.release()


def test_a_killed_set_write_leaves_the_old_set_and_its_leftovers_are_cleaned(tmp_path):
    import signal
    import subprocess
    import sys

    from ddcs_core import atomic

    folder = tmp_path / "pool"
    atomic.write_set(folder, "evaluation", {"a.txt": lambda p: p.write_text("old a"),
                                            "b.txt": lambda p: p.write_text("old b")})
    code = ("import sys, time; from pathlib import Path; from ddcs_core import atomic\n"
            "def stuck(p):\n"
            "    print('writing b', flush=True); time.sleep(60)\n"
            "atomic.write_set(Path(sys.argv[1]), 'evaluation', {'a.txt': lambda p: p.write_text('new a'), "
            "'b.txt': stuck})\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing b"  # a.txt of the new set is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / "a.txt").read_text() == "old a" and (folder / "b.txt").read_text() == "old b"
    assert len(list(folder.glob(".evaluation-*"))) == 2  # the current set and the killed one's half set
    atomic.write_set(folder, "evaluation", {"a.txt": lambda p: p.write_text("new a"),
                                            "b.txt": lambda p: p.write_text("new b")})
    assert (folder / "a.txt").read_text() == "new a" and (folder / "b.txt").read_text() == "new b"
    assert [p.name for p in folder.glob(".evaluation-*")] == [atomic.current_set(folder, "evaluation").name]
