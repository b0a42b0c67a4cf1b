import csv
import json

import numpy as np
import pytest
from PIL import Image

from ddcs_core.__main__ import main
from ddcs_core.errors import DDCSInputError
from ddcs_core.evaluate import EvalConfig, evaluate

SIZE = 32


def _faces(rng, n, label):
    """Smooth, class-structured little images: a per-class colour field plus noise."""
    base = np.random.default_rng(label).integers(0, 256, (1, 4, 4, 3))
    low = np.clip(base + rng.normal(0, 30, (n, 4, 4, 3)), 0, 255).astype(np.uint8)
    return [np.asarray(Image.fromarray(x).resize((SIZE, SIZE), Image.BILINEAR)) for x in low]


def _write_tree(root, per_class: dict[str, list[np.ndarray]]):
    for cls, images in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture()
def world(tmp_path):
    rng = np.random.default_rng(0)
    targets = {f"person_{c}": _faces(rng, 6, c) for c in range(3)}
    recon = {f"person_{c}": _faces(rng, 5, c) for c in range(3)}
    recon["person_0"].append(targets["person_0"][2].copy())  # an exact copy of a target
    return _write_tree(tmp_path / "targets", targets), _write_tree(tmp_path / "recon", recon), tmp_path


def test_cli_writes_report_and_per_target_csv(world):
    targets, recon, tmp = world
    out = tmp / "out"
    assert main(["evaluate", "--targets", str(targets), "--recon", str(recon), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"targets": 18, "reconstructions": 16, "target_classes": 3, "reconstruction_classes": 3}
    assert report["profile"]["net"] == "alex" and report["profile"]["assignment"] == "class-conditional"
    assert report["exact_copies"] == 1 and report["exact_copy_targets"][0].endswith("person_0/002.png")
    assert np.isfinite(report["ddcs"]) and report["ddcs"] > 0
    assert 0 < report["matched_fraction"] <= 1
    assert report["fid"]["features"].startswith("lpips-alex")
    for key in ("precision", "recall", "density", "coverage"):
        assert 0 <= report["prdc"][key] <= (10 if key == "density" else 1)
    assert report["versions"]["torch"] and report["seed"] == 0
    rows = list(csv.DictReader((out / "targets.csv").open()))
    assert len(rows) == 18
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 19)]
    unmatched = [r for r in rows if r["matched"] == "False"]
    assert all(r["d_tar"] == "inf" and r["contribution"] == "0" for r in unmatched)
    assert rows[: len(unmatched)] == unmatched  # hardest first
    finite = [float(r["contribution"]) for r in rows if r["matched"] == "True" and r["exact_copy"] == "False"]
    assert sum(finite) == pytest.approx(report["ddcs"], rel=1e-6)
    copy = next(r for r in rows if r["exact_copy"] == "True")
    assert float(copy["d_tar"]) == 0.0 and copy["contribution"] == "inf"


def test_duplicating_reconstructions_leaves_ddcs_unchanged(world, tmp_path):
    targets, recon, tmp = world
    first = evaluate(targets, recon, tmp / "a", progress=False).report
    for cls in recon.iterdir():
        for f in list(cls.iterdir()):
            (cls / f"dup_{f.name}").write_bytes(f.read_bytes())
    second = evaluate(targets, recon, tmp / "b", progress=False).report
    assert second["counts"]["reconstructions"] == 2 * first["counts"]["reconstructions"]
    assert second["ddcs"] == pytest.approx(first["ddcs"], rel=1e-9)  # the reproducibility contract's tolerance
    assert second["ddcs_avg"] == pytest.approx(first["ddcs_avg"], rel=1e-9)
    assert second["matched"] == first["matched"]
    assert second["near_ties"]["targets"] == first["near_ties"]["targets"]


def test_class_agnostic_option_is_recorded(world):
    targets, recon, tmp = world
    cond = evaluate(targets, recon, tmp / "c", progress=False).report
    agn = evaluate(targets, recon, tmp / "d", EvalConfig(class_agnostic=True), progress=False).report
    assert agn["profile"]["assignment"] == "class-agnostic"
    assert agn["ddcs"] >= cond["ddcs"] - 1e-12  # more freedom to reach the nearest target


def test_unknown_classes_fail_clearly_or_are_skipped(world, capsys):
    targets, recon, tmp = world
    _write_tree(recon, {"stranger": _faces(np.random.default_rng(1), 2, 9)})
    args = ["evaluate", "--targets", str(targets), "--recon", str(recon), "--out", str(tmp / "e"), "--quiet"]
    assert main(args) == 2
    assert "stranger" in capsys.readouterr().err and not (tmp / "e").exists()
    assert main(args + ["--skip-unknown-classes"]) == 0
    report = json.loads((tmp / "e" / "report.json").read_text())
    assert report["counts"]["reconstructions"] == 16
    assert any("stranger" in n for n in report["notes"])


def test_failure_keeps_earlier_results_intact(world, capsys):
    targets, recon, tmp = world
    out = tmp / "out"
    evaluate(targets, recon, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (recon / "person_1" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["evaluate", "--targets", str(targets), "--recon", str(recon), "--out", str(out), "--quiet"]) == 2
    assert "000.png" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_npz_inputs_and_target_resize(world):
    targets, recon, tmp = world
    rng = np.random.default_rng(3)
    big = {f"person_{c}": [np.asarray(Image.fromarray(x).resize((48, 48))) for x in _faces(rng, 4, c)] for c in range(3)}
    big_root = _write_tree(tmp / "big_targets", big)
    imgs = np.stack([x for c in range(3) for x in _faces(rng, 3, c)])
    labels = np.repeat(np.arange(3), 3)
    np.savez(tmp / "recon.npz", images=imgs, labels=labels, class_names=np.array([f"person_{c}" for c in range(3)]))
    ev = evaluate(big_root, tmp / "recon.npz", tmp / "f", progress=False)
    assert ev.report["inputs"]["image_size"] == [SIZE, SIZE]
    assert any("resized" in n for n in ev.report["notes"])
    assert ev.recon.paths[0].endswith("recon.npz#0")


def test_paper_profile_uses_vgg_at_requested_size(world):
    targets, recon, tmp = world
    ev = evaluate(targets, recon, tmp / "g", EvalConfig(profile="paper", size=32), progress=False)
    assert ev.report["profile"]["net"] == "vgg" and ev.report["inputs"]["image_size"] == [32, 32]
    with pytest.raises(DDCSInputError, match="--profile"):
        EvalConfig(profile="slow").resolved()


def test_eval_model_gives_accuracy_and_knn(world):
    from ddcs_core.models.checkpoints import save_model
    from ddcs_core.models.classifiers import build_classifier

    targets, recon, tmp = world
    model = build_classifier("vggbn-s", num_classes=3, input_size=SIZE)
    save_model(tmp / "eval.safetensors", model, "vggbn-s", model.config,
               meta={"class_names": ["person_0", "person_1", "person_2"]})
    ev = evaluate(targets, recon, tmp / "h", EvalConfig(eval_model=str(tmp / "eval.safetensors")), progress=False)
    acc = ev.report["attack_accuracy"]
    assert 0 <= acc["top1"] <= acc["top5"] == 1.0  # only 3 classes: top-5 covers them all
    assert ev.report["knn_distance"] > 0 and ev.report["eval_model"]["arch"] == "vggbn-s"
    wrong = build_classifier("vggbn-s", num_classes=4, input_size=SIZE)
    save_model(tmp / "wrong.safetensors", wrong, "vggbn-s", wrong.config)
    with pytest.raises(DDCSInputError, match="4 classes"):
        evaluate(targets, recon, tmp / "i", EvalConfig(eval_model=str(tmp / "wrong.safetensors")), progress=False)


def test_lpips_command_prints_reference_distance(data_root, capsys):
    folder = data_root / "lpips-examples"
    assert main(["lpips", str(folder / "ex_ref.png"), str(folder / "ex_p1.png")]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(0.138, abs=0.002)
