"""The experiment run: every step into one run folder, resume after a kill, determinism, jobs, table."""

import json

import numpy as np
import pytest
import torch
import yaml

import ddcs_core.attacks.inversion as invert_module
import ddcs_core.transfer as transfer_module
from ddcs_core import experiment, worlds
from ddcs_core.embedding_map import map_is_current
from ddcs_core.errors import DDCSInputError
from ddcs_core.config import parse_experiment
from ddcs_core.control import Cancelled
from ddcs_core.experiment import AttackWorld, invert_job, open_experiment, transfer_job
from ddcs_core.models.checkpoints import save_model
from ddcs_core.reproduce import reproduction_table, to_markdown, transfer_comparison
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


pytestmark = pytest.mark.usefixtures("deterministic_cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> AttackWorld:
    t = targets()
    evaluator = tiny_classifier("vggbn-s", seed=7)
    path = tmp_path_factory.mktemp("world") / "evaluator.safetensors"
    save_model(path, evaluator, "vggbn-s", evaluator.config, meta={"class_names": t.class_names})
    G, D = tiny_gan()
    return AttackWorld(tiny_classifier(), G, D, str(path), t, public_images(), {"folder": "tiny"})


def run_all(world, root, name="tiny"):
    exp = open_experiment(parse_experiment(CONFIG), world, root, name, device="cpu", progress=False, log=lambda m: None)
    exp.run_all()
    return exp.run


def assert_same_runs(a, b):
    assert a.pools() == b.pools() == POOLS
    for pool in POOLS:
        (ra, la), (rb, lb) = a.recon(pool), b.recon(pool)
        assert np.array_equal(ra.images, rb.images) and np.array_equal(ra.labels, rb.labels), pool
        assert np.array_equal(la, lb), pool
        # the reconstructions are bit-identical, so the evaluation contract applies: 1e-9 relative, same assignment
        ea, eb = a.evaluation(pool), b.evaluation(pool)
        for key in ("ddcs", "ddcs_avg", "knn_distance"):
            assert ea.report[key] == pytest.approx(eb.report[key], rel=1e-9), (pool, key)
        assert ea.report["matched_fraction"] == eb.report["matched_fraction"], pool
        assert np.array_equal(ea.arrays["recon_assigned"], eb.arrays["recon_assigned"]), pool
        np.testing.assert_allclose(ea.arrays["d_tar"], eb.arrays["d_tar"], rtol=1e-9, atol=0)
    for gen in ("pretrained", "vanilla", "entropy", "ngd"):
        fa, fb = (json.loads((r.path / "generators" / f"{gen}.json").read_text()) for r in (a, b))
        assert fa["fid"] == pytest.approx(fb["fid"], rel=1e-9)


def test_resume_after_kills_equals_uninterrupted_run(world, tmp_path, monkeypatch):
    full = run_all(world, tmp_path / "a")
    assert json.loads((full.path / "config.json").read_text())["experiment"]["inversion"]["seed"] == 0
    steps = json.loads((full.path / "steps.json").read_text())
    assert all(s["done"] for s in steps.values()) and "table" in steps
    for mode in ("vanilla", "entropy", "ngd"):
        assert (full.path / "grids" / mode / "step-0002.png").is_file()
    # the pre-trained generator's grid is every mode's starting point, at the same latents
    assert (full.path / "grids" / "pretrained.png").read_bytes() == (full.path / "grids" / "ngd" / "step-0000.png").read_bytes()
    assert list(steps)[:3] == ["fid-pretrained", "invert-pretrained", "evaluate-vanilla"]  # first pool first
    assert map_is_current(full)  # the Map covers every pool
    dual, _ = full.recon("dual-ngd")
    assert len(dual) == len(full.recon("vanilla")[0]) + len(full.recon("transfer-ngd")[0])
    table = reproduction_table(full)
    assert [r["pool"] for r in table["pools"]] == POOLS and "Gen. FID" in to_markdown(table)
    assert (full.path / "reproduction.md").is_file()
    pre = json.loads((full.path / "generators" / "pretrained.json").read_text())
    assert 0 <= pre["victim_entropy"] <= np.log(3) + 1e-9 and 1 / 3 <= pre["victim_confidence"] <= 1
    assert table["transfer"][0]["victim_entropy"] == pre["victim_entropy"] and "Victim entropy" in to_markdown(table)
    lam = {t["mode"]: t["lam"] for t in table["transfer"]}
    used = parse_experiment(full.config["experiment"]).transfer.for_mode("ngd").lam
    assert lam == {"pretrained": None, "vanilla": None, "entropy": used, "ngd": used}
    comparison = transfer_comparison([table, table])  # a sweep lists each run's modes, the pre-trained once
    assert comparison.count("| pretrained |") == 1 and comparison.count("| ngd (reference) |") == 2

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
    assert (tmp_path / "b" / "tiny" / "work" / "invert" / "vanilla" / "class-00000" / "opt-0000.pt").is_file()
    with pytest.raises(RuntimeError, match="killed"):
        run_all(world, tmp_path / "b")
    assert (tmp_path / "b" / "tiny" / "transfer" / "ngd" / "state.pt").is_file()
    resumed = run_all(world, tmp_path / "b")
    assert_same_runs(full, resumed)


def test_jobs_run_steps_and_cancel(world, tmp_path, monkeypatch):
    monkeypatch.setitem(worlds.WORLD_LOADERS, "demo", lambda config, device, progress=True: world)
    exp = open_experiment(parse_experiment(CONFIG), world, tmp_path, "jobs", device="cpu", progress=False)
    run = exp.run
    exp.run_all(only=["fid-pretrained"])
    assert list(json.loads((run.path / "steps.json").read_text())) == ["fid-pretrained"]
    with pytest.raises(DDCSInputError, match="unknown steps"):
        exp.run_all(only=["transfer-gan"])
    fractions = []
    with pytest.raises(Cancelled):
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
        parse_experiment({"attack": {}})
    with pytest.raises(DDCSInputError, match="transfer.modes"):
        parse_experiment({"transfer": {"modes": ["ngd", "ngd"]}})
    with pytest.raises(DDCSInputError, match="unknown inversion keys"):
        parse_experiment({"inversion": {"epochs": 3}})
    with pytest.raises(DDCSInputError, match="evaluation keys"):
        parse_experiment({"evaluation": {"eval_model": "x"}})
    cfg = parse_experiment({"seed": 5})
    assert cfg.transfer.common.seed == cfg.inversion.seed == cfg.evaluation.seed == 5


def test_demo_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "configs"
    cfg = experiment.load_config(folder / "demo.yaml")
    assert cfg.modes == ("vanilla", "entropy", "ngd") and cfg.transfer.common.projection == "reference"
    damped = experiment.load_config(folder / "demo-damped.yaml")
    assert damped.transfer.common.projection == "damped" and damped.inversion == cfg.inversion
    with pytest.raises(DDCSInputError, match="not found"):
        experiment.load_config(folder / "missing.yaml")
    tuned = experiment.load_config(folder / "demo.yaml", ["transfer.lam=0.3", "transfer.modes=[ngd]", "name=ngd-lam"])
    assert (tuned.transfer.common.lam, tuned.modes, tuned.name) == (0.3, ("ngd",), "ngd-lam")
    assert tuned.inversion == cfg.inversion
    for bad, match in (("transfer.lam", "section.key=value"), ("name.x=1", "not a section"),
                       ("transfer.gamma=2", "unknown transfer keys")):
        with pytest.raises(DDCSInputError, match=match):
            experiment.load_config(folder / "demo.yaml", [bad])


def test_attack_runs_from_the_app_and_the_demo_run(world, tmp_path, monkeypatch):
    from ddcs_core.ui.views import Explorer

    monkeypatch.setitem(worlds.WORLD_LOADERS, "demo", lambda config, device, progress=True: world)
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(CONFIG))
    monkeypatch.setattr(experiment, "DEMO_CONFIG", base)
    ex = Explorer(tmp_path / "runs", "cpu")
    ex.shipped_demo = None  # the live path (the shipped run: tests/test_shipped_run.py)
    settings = {"modes": ["ngd"], "steps": 1, "lam": 0.1, "projection": "damped", "k": 2, "mu": 0.05,
                "final_per_class": 1, "classes": 2, "seed": 3}
    run = ex.new_attack_run("mine", settings)
    assert ex.cancel_job("mine")  # cancelled between steps: recorded as such, the finished steps kept
    assert ex.runner.wait(run, 120).state == "cancelled"
    ex.start_job("mine", "attack", {"device": "cpu"})
    status = ex.runner.wait(run, 300)
    assert status.state == "done" and status.progress == 1.0, status.log
    cfg = run.config["experiment"]
    assert (cfg["transfer"]["modes"], cfg["transfer"]["projection"], cfg["transfer"]["k"], cfg["classes"]) == (["ngd"], "damped", 2, 2)
    assert cfg["transfer"]["seed"] == cfg["inversion"]["seed"] == 3 and cfg["inversion"]["final_per_class"] == 1
    assert run.pools() == ["dual-ngd", "transfer-ngd", "vanilla"]
    assert sorted(run.recon("vanilla")[0].labels.tolist()) == [0, 1]  # 2 classes x 1 sample
    with pytest.raises(DDCSInputError, match="taken"):
        ex.new_attack_run("mine", settings)
    with pytest.raises(DDCSInputError, match="at least one transfer mode"):
        ex.new_attack_run("other", {**settings, "modes": []})
    with pytest.raises(DDCSInputError, match="transfer.projection"):
        ex.new_attack_run("other", {**settings, "projection": "exact"})
    assert not (tmp_path / "runs" / "other").exists()

    demo = ex.ensure_demo_run(progress=False)  # first start: created, attacked in the background
    assert demo.name == "demo" and ex.runner.wait(demo, 300).state == "done"
    assert demo.pools() == POOLS and (demo.path / "reproduction.md").is_file()
    first = ex.job_status("demo").id
    ex.ensure_demo_run(progress=False)  # finished: left alone
    assert ex.job_status("demo").id == first
    live = ex.rerun_demo()  # the Run view's "Re-run the demo attack": a new run, attacked live
    assert live.name.startswith("demo-live-") and ex.job_status(live.name).kind == "attack"
    assert live.config["experiment"]["inversion"] == demo.config["experiment"]["inversion"]
    assert ex.cancel_job(live.name) and ex.runner.wait(live, 120).state == "cancelled"
