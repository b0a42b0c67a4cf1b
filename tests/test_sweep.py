"""The sweep: methods × λ × seeds as runs in the run store, its table and plots, resuming after a kill."""

import csv
import json

import pytest
import yaml

import ddcs_core.experiment as experiment_module
from ddcs_core import worlds
from ddcs_core.__main__ import main
from ddcs_core.errors import DDCSInputError
from ddcs_core.sweep import load_sweep, run_sweep, sweep_results
from tests.test_experiment import CONFIG, world  # noqa: F401 - the tiny world fixture

pytestmark = pytest.mark.usefixtures("deterministic_cpu")

SWEEP = {
    "name": "tiny-sweep",
    "experiment": {**CONFIG, "transfer": {**CONFIG["transfer"], "steps": 1}},
    "methods": [{"name": "entropy", "mode": "entropy"},
                {"name": "ngd-none", "mode": "ngd", "set": {"transfer.ngd_scale": "none"}}],
    "lams": [0.01, 0.1],
    "seeds": [0, 1],
    "bootstrap": {"resamples": 200, "seed": 0},
}


def write(tmp_path, spec) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_writes_table_and_plots_and_resumes_point_by_point(world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(worlds.WORLD_LOADERS, "demo", lambda config, device, progress=True: world)
    sweep = load_sweep(write(tmp_path, SWEEP))
    points = sweep.points()
    assert [p.run for p in points][:3] == ["tiny-sweep.entropy.lam0.01.s0", "tiny-sweep.entropy.lam0.01.s1",
                                           "tiny-sweep.entropy.lam0.1.s0"]
    ngd = points[-1].config.transfer
    assert (ngd.modes, ngd.common.lam, ngd.common.ngd_scale, ngd.common.seed) == (("ngd",), 0.1, "none", 1)

    real, calls = experiment_module.transfer, []

    def dying_transfer(*args, **kw):  # the third point dies inside its transfer
        calls.append(args[4].seed)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kw)

    monkeypatch.setattr(experiment_module, "transfer", dying_transfer)
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="killed"):
        run_sweep(sweep, runs, device="cpu", log=lambda m: None)
    first = json.loads((runs / points[0].run / "steps.json").read_text())
    calls.clear()
    monkeypatch.setattr(experiment_module, "transfer", lambda *a, **kw: (calls.append(a[4].seed), real(*a, **kw))[1])
    folder = run_sweep(sweep, runs, device="cpu", log=lambda m: None)
    assert len(calls) == len(points) - 2  # the two finished points were not recomputed
    assert json.loads((runs / points[0].run / "steps.json").read_text()) == first
    assert set(first) == {"transfer-entropy", "fid-entropy"}  # only the steps a point needs
    assert json.loads((runs / "tiny-sweep.pretrained" / "steps.json").read_text()).keys() == {"fid-pretrained"}

    for name in ("sweep.json", "table.csv", "table.md", "points.json", "tradeoff.png", "tradeoff.html"):
        assert (folder / name).is_file(), name
    assert (folder / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (folder / "tradeoff.html").read_text()
    assert '<script src="http' not in html and "Plotly.newPlot" in html and "tiny-sweep.ngd-none.lam0.1.s1" in html  # offline; runs clickable
    rows = list(csv.DictReader((folder / "table.csv").open()))
    assert [r["row"] for r in rows].count("point") == 8 and [r["row"] for r in rows].count("mean") == 4
    means = [r for r in rows if r["row"] == "mean"]
    assert {(r["method"], r["lam"], r["n"]) for r in means} == {(m, lam, "2") for m in ("entropy", "ngd-none")
                                                                for lam in ("0.01", "0.1")}
    for r in means:
        assert float(r["gen_fid_lo"]) <= float(r["gen_fid"]) <= float(r["gen_fid_hi"])
    assert rows[0]["row"] == "reference" and float(rows[0]["gen_fid"]) > 0
    assert json.loads((runs / points[-1].run / "job.json").read_text())["state"] == "done"  # the app sees it
    shared = (runs / "tiny-sweep.pretrained" / "targets.npz").stat()
    assert (runs / points[-1].run / "targets.npz").stat().st_ino == shared.st_ino  # one copy of the targets
    (folder / "table.md").unlink()
    assert main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--runs", str(runs), "--report-only"]) == 0
    results = sweep_results(folder)
    assert all(p["grid"].endswith(f"{p['mode']}.png") for p in results["points"])
    assert "95 % bootstrap" in (folder / "table.md").read_text()


def test_sweep_config_errors(tmp_path):
    for change, match in (({"methods": []}, "methods must be"),
                          ({"methods": [{"name": "x", "mode": "gan"}]}, "mode must be"),
                          ({"methods": [{"name": "x", "mode": "ngd", "set": {"transfer.lam": 1}}]}, "set by the sweep"),
                          ({"methods": [{"name": "x", "mode": "ngd", "set": {"transfer.ngd_scale": "x"}}]}, "ngd_scale"),
                          ({"lams": [0.1, 0.1]}, "repeated"), ({"seeds": [0.5]}, "ints"), ({"color": 1}, "unknown sweep keys"),
                          ({"base": "missing.yaml"}, "give the experiment")):
        with pytest.raises(DDCSInputError, match=match):
            load_sweep(write(tmp_path, {**SWEEP, **change}))
    spec = {k: v for k, v in SWEEP.items() if k != "experiment"}
    with pytest.raises(DDCSInputError, match="not found"):
        load_sweep(write(tmp_path, {**spec, "base": "missing.yaml"}))


def test_shipped_sweep_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "configs"
    demo = load_sweep(folder / "sweep-demo.yaml")
    points = demo.points()
    assert len(points) == 21 and not demo.invert and len(demo.seeds) >= 3
    demo_paper = [p for p in points if p.method.name == "paper"]
    assert len(demo_paper) == 3 and demo_paper[0].config.transfer.common.lpips_net == "vgg"
    assert {p.config.transfer.common.steps for p in points} == {300}
    none = [p for p in points if p.method.name == "ngd-ref-none"][0].config.transfer.common
    assert (none.projection, none.ngd_scale) == ("reference", "none")
    paper = load_sweep(folder / "sweep-paper.yaml")
    assert paper.invert and len(paper.seeds) >= 3 and len(paper.points()) == 135
    assert {m.name for m in paper.methods} >= {"entropy", "ngd-ref-spectral", "ngd-ref-none", "ngd-damped", "paper"}
    preset = [p for p in paper.points() if p.method.name == "paper"][0].config.transfer.common
    # the preset beats the base file's own ngd_scale / k / lpips_net; the sweep's λ still wins
    assert (preset.ngd_scale, preset.lpips_net, preset.basis_latents, preset.basis_per_slot) == \
        ("none", "vgg", "uniform", True)
    tuned = load_sweep(folder / "sweep-demo.yaml", ["transfer.steps=20"])
    assert {p.config.transfer.common.steps for p in tuned.points()} == {20}


def test_sweep_with_inversion_reports_pool_metrics(world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(worlds.WORLD_LOADERS, "demo", lambda config, device, progress=True: world)
    spec = {**SWEEP, "methods": SWEEP["methods"][:1], "lams": [0.1], "invert": True}
    folder = run_sweep(load_sweep(write(tmp_path, spec)), tmp_path / "runs", device="cpu", log=lambda m: None)
    results = sweep_results(folder)
    assert [p["seed"] for p in results["points"]] == [0, 1]
    for row in [*results["points"], results["reference"]]:
        assert 0 <= row["ddcs"] <= 1 and 0 <= row["acc1"] <= 1 and "coverage" in row  # None: 1 per class < k
    assert results["means"][0]["n"] == 2 and "Attack acc@1" in (folder / "table.md").read_text()
    from ddcs_core.sweep_plots import panels

    assert [m for m, _ in panels(results)] == ["victim_confidence", "acc1", "ddcs"]
