"""The shipped demo run: export a finished run compactly, verify it, install it as a normal run, check
one pool by re-evaluating it. A tiny experiment run stands in for the demo attack."""

import json

import numpy as np
import pytest

from ddcs_core import shipped_run
from ddcs_core.embedding_map import map_is_current
from ddcs_core.errors import DDCSInputError
from ddcs_core.config import parse_experiment
from ddcs_core.experiment import open_experiment, run_finished, step_names
from ddcs_core.hashing import sha256_file
from ddcs_core.runs import RunStore
from tests.test_experiment import CONFIG, POOLS, world  # noqa: F401  (the tiny world fixture)

pytestmark = pytest.mark.usefixtures("deterministic_cpu")


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):  # noqa: F811
    exp = open_experiment(parse_experiment(CONFIG), world, tmp_path_factory.mktemp("runs"), "tiny", device="cpu",
                          progress=False, log=lambda m: None)
    assert step_names(exp.config) == [step.name for step in exp.steps()]  # the status line counts on these
    exp.run_all()
    return exp.run


@pytest.fixture()
def shipped(finished, tmp_path):
    out = tmp_path / "demo-run"
    shipped_run.export_run(finished.path, out, log=lambda m: None)
    return out


def test_export_is_compact_and_complete(finished, shipped):
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert set(manifest["pools"]) == set(POOLS)
    for pool in POOLS:  # dual pools are rebuilt from their two halves, the others ship as PNG grids
        dual = pool.startswith("dual-")
        assert ("union_of" in manifest["pools"][pool]) == dual
        assert (shipped / "pools" / pool / "images.png").is_file() != dual
        assert (shipped / "pools" / pool / "evaluation.npz").is_file()
    assert not (shipped / "targets.npz").exists() and not list(shipped.rglob("recon.npz"))
    assert not (shipped / "work").exists() and not (shipped / "transfer").exists()
    listed = {p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == set(manifest["files"])
    assert manifest["total_bytes"] == sum(f["size"] for f in manifest["files"].values())
    assert manifest["made"]["command"].startswith("python -m ddcs_core run") and manifest["made"]["finished"]


def test_install_rebuilds_the_run_exactly(world, finished, shipped, tmp_path):  # noqa: F811
    store = RunStore(tmp_path / "store")
    run = shipped_run.install(store, "demo", shipped, targets=world.targets)
    assert run.path == store.root / "demo" and run_finished(run) and run.pools() == finished.pools()
    assert [p.name for p in store.root.iterdir()] == ["demo"]  # nothing left aside
    for pool in POOLS:
        (a, la), (b, lb) = finished.recon(pool), run.recon(pool)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.paths == b.paths
        assert np.array_equal(la, lb)
        ea, eb = finished.evaluation(pool), run.evaluation(pool)
        assert ea.report == eb.report and all(np.array_equal(ea.arrays[k], eb.arrays[k]) for k in ea.arrays)
        assert (finished.pool_dir(pool) / "targets.csv").read_text() == (run.pool_dir(pool) / "targets.csv").read_text()
    assert map_is_current(run)  # the rebuilt files are new bytes, the same pixels: the map still fits
    assert shipped_run.precomputed(run)["command"] == shipped_run.ATTACK_COMMAND
    assert shipped_run.precomputed(finished) is None
    with pytest.raises(DDCSInputError, match="exists"):
        shipped_run.install(store, "demo", shipped, targets=world.targets)
    other = world.targets.images.copy()
    other[0, 0, 0, 0] ^= 1
    from ddcs_core.data.images import ImageSet

    changed = ImageSet(other, world.targets.labels, world.targets.class_names, world.targets.paths, "x")
    with pytest.raises(DDCSInputError, match="differ"):
        shipped_run.install(store, "again", shipped, targets=changed)
    assert not (store.root / "again").exists()


def test_unlisted_or_modified_files_are_refused(shipped, world):  # noqa: F811
    shipped_run.verify(shipped)
    stray = shipped / "pools" / "vanilla" / "extra.npz"
    stray.write_bytes(b"x")
    with pytest.raises(DDCSInputError, match="not listed"):
        shipped_run.verify(shipped)
    stray.unlink()
    report = shipped / "pools" / "vanilla" / "report.json"
    report.write_text(report.read_text().replace('"ddcs"', '"ddcs" ', 1))
    with pytest.raises(DDCSInputError, match="sha256"):
        shipped_run.install(RunStore(shipped.parent / "s"), "demo", shipped, targets=world.targets)
    assert not (shipped.parent / "s" / "demo").exists()


def test_check_reevaluates_one_pool(shipped, world):  # noqa: F811
    result = shipped_run.check(shipped, "vanilla", device="cpu", targets=world.targets, eval_model=world.evaluator_path)
    assert result["ok"] and result["tolerance"]["relative"] == shipped_run.CHECK_RTOL
    assert result["figures"]["ddcs"]["relative_difference"] <= shipped_run.CHECK_RTOL
    # a stored DDCS off by more than the tolerance fails the check (manifest re-signed, so only the number differs)
    path = shipped / "pools" / "vanilla" / "report.json"
    report = json.loads(path.read_text())
    report["ddcs"] *= 1 + 10 * shipped_run.CHECK_RTOL
    path.write_text(json.dumps(report))
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["files"]["pools/vanilla/report.json"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    bad = shipped_run.check(shipped, "vanilla", device="cpu", targets=world.targets, eval_model=world.evaluator_path)
    assert not bad["ok"] and not bad["figures"]["ddcs"]["within_tolerance"]
    with pytest.raises(DDCSInputError, match="--pool"):
        shipped_run.check(shipped, "nope", targets=world.targets)


def test_png_packing_is_lossless(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (37, 8, 6, 3), dtype=np.uint8)
    path = tmp_path / "grid.png"
    path.write_bytes(shipped_run.pack_png(images, columns=5))
    assert np.array_equal(shipped_run.unpack_png(path, 37, (8, 6), columns=5), images)
    with pytest.raises(DDCSInputError, match="grid"):
        shipped_run.unpack_png(path, 37, (8, 8), columns=5)


def test_the_app_opens_onto_the_shipped_run(world, shipped, tmp_path, monkeypatch, caplog):  # noqa: F811
    from ddcs_core import experiment
    from ddcs_core.ui.views import Explorer

    monkeypatch.setattr(shipped_run, "shipped_targets", lambda config, manifest, data_root, progress: world.targets)
    ex = Explorer(tmp_path / "runs", "cpu")
    ex.shipped_demo = shipped
    run = ex.ensure_demo_run(progress=False)
    assert run_finished(run) and ex.job_status("demo") is None  # nothing left to attack
    assert "Precomputed results" in ex.run_line("demo") and shipped_run.ATTACK_COMMAND in ex.run_line("demo")
    assert ex.reference_times()["table"] >= 0  # the shipped steps time the ETAs of a live re-run
    assert ex.ensure_demo_run(progress=False).path == run.path  # the second start keeps it

    made = []

    def live(root, name, settings=None, base_config=None, device="auto", progress=False):
        made.append(name)
        run = RunStore(root).create(name, {"kind": "experiment"}, world.targets)
        (run.path / "steps.json").write_text(json.dumps({"table": {"done": True}}))
        return run

    monkeypatch.setattr(experiment, "create_attack_run", live)
    (shipped / "stray.txt").write_text("x")
    other = Explorer(tmp_path / "other", "cpu")
    other.shipped_demo = shipped
    with caplog.at_level("WARNING"):
        assert other.ensure_demo_run(progress=False).name == "demo"
    assert made == ["demo"] and "refused" in caplog.text and "stray.txt" in caplog.text
    assert shipped_run.precomputed(other.store.run("demo")) is None
