"""torch.distributed on CPU (gloo): 2 processes launched by torchrun from the test, against 1 process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddcs_core import distributed
from tests.dist_worker import tiny_pool
from tests.test_evaluate import world  # noqa: F401  (the tiny image world fixture)

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node nproc ARGS` on 127.0.0.1 with a free port, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)  # as each torchrun worker: the same arithmetic, so the pools can match bit for bit
    torch.backends.mkldnn.enabled = False
    yield
    torch.set_num_threads(before[0])
    torch.backends.mkldnn.enabled = before[1]


def test_shard_balances_costs_and_covers_every_item():
    parts = distributed.shard([5, 1, 1, 1, 1, 1], 2)
    assert sorted(i for p in parts for i in p) == list(range(6))
    assert parts == [[0], [1, 2, 3, 4, 5]]
    assert distributed.shard([1] * 4, 2) == [[0, 2], [1, 3]]
    assert distributed.shard([1, 1], 3)[2] == []


def test_single_process_is_not_distributed(monkeypatch):
    for key in distributed.ENV:
        monkeypatch.delenv(key, raising=False)
    ctx, device = distributed.setup("cpu")
    assert not distributed.launched() and not ctx.active and device == "cpu"
    assert distributed.gather_to_main({"a": 1}) == [{"a": 1}] and distributed.is_main()


def _pool(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_two_process_inversion_equals_one_process(tmp_path, one_thread):
    single = tiny_pool(None)
    done = torchrun("tests/dist_worker.py", str(tmp_path / "work"), str(tmp_path / "pool.npz"))
    assert done.returncode == 0, done.stderr[-3000:]
    two = _pool(tmp_path / "pool.npz")
    assert np.array_equal(two["latents"], single.latents) and np.array_equal(two["images"], single.images)
    assert np.array_equal(two["labels"], single.labels) and two["paths"].tolist() == single.paths
    assert np.array_equal(two["confidence"], single.confidence)
    finished = sorted(p.parent.name for p in (tmp_path / "work").glob("class-*/final.pt"))
    assert finished == ["class-00000", "class-00001", "class-00002", "class-00003"]  # each by its own rank


def test_killed_rank_then_resume_ends_like_an_uninterrupted_run(tmp_path, one_thread):
    work, out = tmp_path / "work", tmp_path / "pool.npz"
    killed = torchrun("tests/dist_worker.py", str(work), str(out), "1")
    assert killed.returncode != 0 and not out.exists()  # rank 1 died after its first class; nothing was written
    kept = work / "class-00001" / "final.pt"
    assert kept.is_file() and not (work / "class-00003" / "final.pt").exists()
    stamp = kept.stat().st_mtime_ns
    resumed = torchrun("tests/dist_worker.py", str(work), str(out), nproc=1)  # resume with another N
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert kept.stat().st_mtime_ns == stamp  # a finished class is not redone
    single = tiny_pool(None)
    pool = _pool(out)
    assert np.array_equal(pool["latents"], single.latents) and np.array_equal(pool["images"], single.images)


def test_two_process_evaluate_cli_matches_one_process(world):  # noqa: F811
    targets, recon, tmp = world
    args = ["evaluate", "--targets", str(targets), "--recon", str(recon), "--device", "cpu", "--features", "lpips",
            "--quiet"]
    plain = subprocess.run([sys.executable, "-m", "ddcs_core", *args, "--out", str(tmp / "one")], cwd=REPO,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-3000:]  # in its own process, as the ranks: no shared oneDNN state
    done = torchrun("-m", "ddcs_core", *args, "--out", str(tmp / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp / d / "report.json").read_text()) for d in ("one", "two"))
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "split": "classes"}
    assert one["distributed"] == {"world_size": 1, "backend": None, "split": "none"}
    with np.load(tmp / "one" / "evaluation.npz") as a, np.load(tmp / "two" / "evaluation.npz") as b:
        assert np.array_equal(a["nearest"], b["nearest"]) and np.array_equal(a["recon_assigned"], b["recon_assigned"])
        np.testing.assert_allclose(b["d_tar"], a["d_tar"], rtol=1e-5, atol=1e-7)
    assert two["ddcs"] == pytest.approx(one["ddcs"], rel=1e-5) and two["matched"] == one["matched"]
    assert two["prdc"]["coverage"] == pytest.approx(one["prdc"]["coverage"], rel=1e-5)


def test_commands_that_do_not_share_work_refuse_torchrun(monkeypatch, capsys):
    from ddcs_core.__main__ import main

    for key, value in zip(distributed.ENV, ("1", "2", "1")):
        monkeypatch.setenv(key, value)
    assert main(["reproduce", "--run", "nowhere"]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err
    assert not distributed.context().active
