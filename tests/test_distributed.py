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
import yaml

from ddcs_core import distributed
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.gan_losses import diff_augment
from ddcs_core.models.stylegan2 import minibatch_stddev
from ddcs_core.models.train_gan import BatchShare, mbstd_group
from ddcs_core.sweep import sweep_results
from tests.dist_worker import tiny_pool, tiny_transfer
from tests.tiny_world import tiny_gan
from tests.test_custom_world import world_dir  # noqa: F401  (a custom world's files, loadable by a subprocess)
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


def test_batch_share_takes_whole_stddev_groups_and_the_whole_batch_draws():
    shares = [BatchShare.for_rank(8, 4, r, 2) for r in range(2)]
    assert sorted(torch.cat([s.rows for s in shares]).tolist()) == list(range(8))
    x = torch.randn(8, 3, 4, 4)
    whole = minibatch_stddev(x, 4)
    for s in shares:  # D's minibatch-stddev on a rank's rows is the whole batch's, at those rows
        torch.testing.assert_close(minibatch_stddev(s.take(x), 4), s.take(whole))
    augmented = diff_augment(x, generator=torch.Generator().manual_seed(3))
    for s in shares:
        mine = s.per_image(lambda y: diff_augment(y, generator=torch.Generator().manual_seed(3)), s.take(x))
        torch.testing.assert_close(mine, s.take(augmented))
    with pytest.raises(DDCSInputError, match="batch_size 4 does not split over 2 processes"):
        BatchShare.for_rank(4, 4, 0, 2)


def test_batch_share_of_an_imported_stylegan2_ada_pair():
    """An imported (StyleGAN2-ADA) G draws its noise as the whole batch would, and its D's group is known."""
    from tests.test_custom_world import tiny_sg2ada

    G, D = tiny_sg2ada(0)
    assert mbstd_group(D, 8) == 4 and mbstd_group(tiny_gan()[1], 8) == 4
    D.b4.mbstd.group_size = None  # the original's "whole batch"
    assert mbstd_group(D, 8) == 8
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)  # zero at initialisation: make the noise count
    share = BatchShare.for_rank(8, 4, 1, 2)
    ws = G.mapping(torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(5)
    whole = G.synthesis(ws)
    torch.manual_seed(5)
    torch.testing.assert_close(share.synthesis(G, ws), share.take(whole))


def _weights(out: Path, mode: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "transfer" / mode / "G.safetensors")


def assert_same_transfer(a: Path, b: Path, mode: str) -> None:
    """Tolerance of a transfer shared over ranks vs one process (float rounding of the split batch and the
    all-reduce): losses within 1e-5 relative; weights within 1e-5 but for at most 1 in 1000 elements whose
    Adam step (normalised by a near-zero gradient) may turn differently, bounded by a fifth of lr_g = 2.5e-3."""
    wa, wb = _weights(a, mode), _weights(b, mode)
    diff = torch.cat([(wa[k].double() - wb[k].double()).abs().flatten() for k in wa])
    assert diff.max() <= 5e-4 and (diff > 1e-5).float().mean() <= 1e-3
    sa, sb = (json.loads((d / "transfer" / mode / "summary.json").read_text()) for d in (a, b))
    for key in ("loss_g", "loss_d", "adv_last"):
        assert sb[key] == pytest.approx(sa[key], rel=1e-5)


@pytest.mark.parametrize("mode", ["entropy", "ngd"])
def test_two_process_transfer_equals_one_process(tmp_path, one_thread, mode):
    tiny_transfer(mode, "reference", str(tmp_path / "one"))
    done = torchrun("tests/dist_worker.py", "transfer", mode, "reference", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_transfer(tmp_path / "one", tmp_path / "two", mode)
    summary = json.loads((tmp_path / "two" / "transfer" / mode / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo", "split": "batch"}


def test_killed_transfer_resumes_with_another_number_of_processes(tmp_path, one_thread):
    out = tmp_path / "killed"
    killed = torchrun("tests/dist_worker.py", "transfer", "entropy", "reference", str(out), "1")
    assert killed.returncode != 0  # rank 1 died after 3 steps; rank 0 had written step 2's state only
    work = out / "transfer" / "entropy"
    assert not (work / "G.safetensors").exists() and not (work / "summary.json").exists()
    assert torch.load(work / "state.pt", weights_only=False)["step"] == 2
    tiny_transfer("entropy", "reference", str(out))  # resume in this one process
    tiny_transfer("entropy", "reference", str(tmp_path / "one"))
    assert_same_transfer(tmp_path / "one", out, "entropy")


def test_two_process_sweep_matches_one_process(world_dir, tmp_path):  # noqa: F811
    """`torchrun -m ddcs_core sweep`: every rank shares each point's transfer; rank 0 writes the table."""
    spec = {"name": "ds", "base": "byo.yaml", "set": {"transfer.batch_size": 8},  # 2 ranks x 1 stddev group of 4
            "methods": [{"name": "entropy", "mode": "entropy"}], "lams": [0.1], "seeds": [0],
            "bootstrap": {"resamples": 100, "seed": 0}}
    path = world_dir / "ds.yaml"  # beside the world's files: the base and its relative paths resolve there
    path.write_text(yaml.safe_dump(spec))
    args = ["sweep", "--config", str(path), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    plain = subprocess.run([sys.executable, "-m", "ddcs_core", *args, "--runs", str(tmp_path / "one")], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=240)
    assert plain.returncode == 0, plain.stderr[-3000:]
    shared = torchrun("-m", "ddcs_core", *args, "--runs", str(tmp_path / "two"), timeout=240)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert shared.stdout.count("| entropy | 0.1 | 0 |") == 1  # one table, printed by rank 0
    one, two = (sweep_results(tmp_path / r / "ds") for r in ("one", "two"))
    assert len(one["points"]) == len(two["points"]) == 1
    for key in ("gen_fid", "victim_confidence", "victim_entropy"):
        assert two["points"][0][key] == pytest.approx(one["points"][0][key], rel=1e-4)
    summary = json.loads((tmp_path / "two" / "ds.entropy.lam0.1.s0" / "transfer" / "entropy" / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2
    assert (tmp_path / "two" / "ds" / "tradeoff.png").is_file()
