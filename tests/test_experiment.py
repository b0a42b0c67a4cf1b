"""The experiment run: every step into one run folder, resume after a kill, determinism, jobs, table."""

import json

import numpy as np
import pytest
import torch

import ddcs_core.attacks.inversion as invert_module
import ddcs_core.transfer as transfer_module
from ddcs_core import experiment
from ddcs_core.errors import DDCSInputError
from ddcs_core.experiment import AttackWorld, StepCancelled, invert_job, open_experiment, resolve_config, transfer_job
from ddcs_core.models.checkpoints import save_model
from ddcs_core.reproduce import reproduction_table, to_markdown
from tests.tiny_world import public_images, targets, tiny_classifier, tiny_gan

CONFIG = {
    "name": "tiny",
    "seed": 0,
    "transfer": {"steps": 2, "batch_size": 4, "k": 3, "reference_latents": 2, "ckpt_every": 1, "grid": 2,
                 "lanczos_tol": 1e-2},
    "inversion": {"search_size": 12, "candidates_per_class": 2, "steps": 2, "lr": 0.05, "final_per_class": 1,
                  "final_views": 2, "init_views": 1, "batch_size": 4},
    "fid": {"samples": 12, "seed": 3},
}
POOLS = ["dual-entropy", "dual-ngd", "dual-vanilla", "transfer-entropy", "transfer-ngd", "transfer-vanilla", "vanilla"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> AttackWorld:
    t = targets()
    evaluator = tiny_classifier("vggbn-s", seed=7)
    path = tmp_path_factory.mktemp("world") / "evaluator.safetensors"
    save_model(path, evaluator, "vggbn-s", evaluator.config, meta={"class_names": t.class_names})
    G, D = tiny_gan()
    return AttackWorld(tiny_classifier(), G, D, str(path), t, public_images(), {"folder": "tiny"})


def run_all(world, root, name="tiny"):
    exp = open_experiment(resolve_config(CONFIG), world, root, name, device="cpu", progress=False, log=lambda m: None)
    exp.run_all()
    return exp.run


def assert_same_runs(a, b):
    assert a.pools() == b.pools() == POOLS
    for pool in POOLS:
        (ra, la), (rb, lb) = a.recon(pool), b.recon(pool)
        assert np.array_equal(ra.images, rb.images) and np.array_equal(ra.labels, rb.labels), pool
        assert np.array_equal(la, lb), pool
        ea, eb = a.evaluation(pool), b.evaluation(pool)
        for key in ("ddcs", "ddcs_avg", "matched_fraction", "knn_distance"):
            assert ea.report[key] == eb.report[key], (pool, key)
        assert np.array_equal(ea.arrays["d_tar"], eb.arrays["d_tar"])
    for gen in ("pretrained", "vanilla", "entropy", "ngd"):
        fa, fb = (json.loads((r.path / "generators" / f"{gen}.json").read_text()) for r in (a, b))
        assert fa["fid"] == fb["fid"]


def test_resume_after_kills_equals_uninterrupted_run(world, tmp_path, monkeypatch):
    full = run_all(world, tmp_path / "a")
    assert json.loads((full.path / "config.json").read_text())["experiment"]["inversion"]["seed"] == 0
    steps = json.loads((full.path / "steps.json").read_text())
    assert all(s["done"] for s in steps.values()) and "table" in steps
    for mode in ("vanilla", "entropy", "ngd"):
        assert (full.path / "grids" / mode / "step-0002.png").is_file()
    dual, _ = full.recon("dual-ngd")
    assert len(dual) == len(full.recon("vanilla")[0]) + len(full.recon("transfer-ngd")[0])
    table = reproduction_table(full)
    assert [r["pool"] for r in table["pools"]] == POOLS and "Gen. FID" in to_markdown(table)
    assert (full.path / "reproduction.md").is_file()

    real_step, real_opt = transfer_module.gan_step, invert_module.optimize_latents
    calls = {"gan": 0, "opt": 0}

    def dying_gan_step(*args, **kw):  # the ngd transfer dies at its second step, after one checkpoint
        calls["gan"] += 1
        if calls["gan"] == 6:
            raise RuntimeError("killed")
        return real_step(*args, **kw)

    def dying_opt(*args, **kw):  # the first inversion dies in its second chunk
        calls["opt"] += 1
        if calls["opt"] == 2:
            raise RuntimeError("killed")
        return real_opt(*args, **kw)

    monkeypatch.setattr(transfer_module, "gan_step", dying_gan_step)
    monkeypatch.setattr(invert_module, "optimize_latents", dying_opt)
    with pytest.raises(RuntimeError, match="killed"):
        run_all(world, tmp_path / "b")
    assert (tmp_path / "b" / "tiny" / "transfer" / "ngd" / "state.pt").is_file()
    with pytest.raises(RuntimeError, match="killed"):
        run_all(world, tmp_path / "b")
    assert (tmp_path / "b" / "tiny" / "work" / "invert" / "vanilla" / "opt-0000.pt").is_file()
    resumed = run_all(world, tmp_path / "b")
    assert_same_runs(full, resumed)


def test_jobs_run_steps_and_cancel(world, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "load_demo_world", lambda config, device, progress=True: world)
    exp = open_experiment(resolve_config(CONFIG), world, tmp_path, "jobs", device="cpu", progress=False)
    run = exp.run
    fractions = []
    with pytest.raises(StepCancelled):
        transfer_job(run, {"mode": "entropy", "device": "cpu"}, lambda f, m: fractions.append(f), lambda: True)
    transfer_job(run, {"mode": "entropy", "device": "cpu"}, lambda f, m: fractions.append(f), lambda: False)
    for gen in ("pretrained", "entropy"):
        invert_job(run, {"generator": gen, "device": "cpu"}, lambda f, m: fractions.append(f), lambda: False)
    done = json.loads((run.path / "steps.json").read_text())
    assert {"transfer-entropy", "fid-entropy", "invert-pretrained", "invert-entropy", "dual-entropy",
            "evaluate-dual-entropy"} <= set(done)
    assert run.pools() == ["dual-entropy", "transfer-entropy", "vanilla"] and fractions[-1] == 1.0
    with pytest.raises(DDCSInputError, match="generator"):
        invert_job(run, {"generator": "gan"}, lambda f, m: None, lambda: False)


def test_config_validation():
    with pytest.raises(DDCSInputError, match="unknown sections"):
        resolve_config({"attack": {}})
    with pytest.raises(DDCSInputError, match="transfer.modes"):
        resolve_config({"transfer": {"modes": ["ngd", "ngd"]}})
    with pytest.raises(DDCSInputError, match="unknown inversion keys"):
        resolve_config({"inversion": {"epochs": 3}})
    with pytest.raises(DDCSInputError, match="evaluation keys"):
        resolve_config({"evaluation": {"eval_model": "x"}})
    cfg = resolve_config({"seed": 5})
    assert cfg["transfer"]["seed"] == cfg["inversion"]["seed"] == cfg["evaluation"]["seed"] == 5


def test_demo_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "configs"
    cfg = experiment.load_config(folder / "demo.yaml")
    assert cfg["transfer"]["modes"] == ["vanilla", "entropy", "ngd"] and cfg["transfer"]["projection"] == "reference"
    damped = experiment.load_config(folder / "demo-damped.yaml")
    assert damped["transfer"]["projection"] == "damped" and damped["inversion"] == cfg["inversion"]
    with pytest.raises(DDCSInputError, match="not found"):
        experiment.load_config(folder / "missing.yaml")
