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
    before = _files(out)
    (recon / "person_1" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["evaluate", "--targets", str(targets), "--recon", str(recon), "--out", str(out), "--quiet"]) == 2
    assert "000.png" in capsys.readouterr().err
    assert _files(out) == before


def _files(out):
    """The output as a reader sees it: the three files' bytes and every entry's name."""
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in out.iterdir()}


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


# --- output set, early checks, warnings, inputs -----------------------------------------------------


def _cli(args, capsys):
    code = main(["evaluate", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_output_is_one_set_switched_at_once(world, monkeypatch):
    import ddcs_core.atomic as atomic

    targets, recon, tmp = world
    out = tmp / "out"
    evaluate(targets, recon, out, EvalConfig(class_agnostic=True), progress=False)
    before = _files(out)
    assert sorted(n for n in before if not n.startswith(".")) == ["evaluation.npz", "report.json", "targets.csv"]
    real_link = atomic._link

    def killed_at_switch(path, target):
        if path.name == ".evaluation":
            raise KeyboardInterrupt  # the process dies right before the one rename that commits
        real_link(path, target)

    monkeypatch.setattr(atomic, "_link", killed_at_switch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(targets, recon, out, progress=False)
    assert _files(out) == before  # all old: no new arrays beside the old report, no staging folder left
    monkeypatch.setattr(atomic, "_link", real_link)

    # leftovers of a process killed harder (no cleanup ran): a half-written set and temp files
    (out / ".evaluation-deadbeef").mkdir()
    (out / ".evaluation-deadbeef" / "evaluation.npz").write_bytes(b"half")
    (out / ".report.json.x1y2.tmp").write_text("{")
    (out / "..evaluation.z9.tmp").symlink_to(".evaluation-deadbeef")
    ev = evaluate(targets, recon, out, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == [".evaluation", names[1], "evaluation.npz", "report.json", "targets.csv"]
    assert names[1].startswith(".evaluation-") and names[1] != ".evaluation-deadbeef"
    report = json.loads((out / "report.json").read_text())
    assert report["profile"]["assignment"] == "class-conditional" and report["ddcs"] == ev.report["ddcs"]
    with np.load(out / "evaluation.npz") as z:
        np.testing.assert_array_equal(z["d_tar"], ev.result.d_tar)


def test_older_plain_files_are_adopted_without_a_mix(world):
    from ddcs_core.runs import Run

    targets, recon, tmp = world
    pool = tmp / "run" / "pools" / "p"
    evaluate(targets, recon, pool, progress=False)
    for name in ("evaluation.npz", "report.json", "targets.csv"):  # the layout of earlier versions
        data = (pool / name).read_bytes()
        (pool / name).unlink()
        (pool / name).write_bytes(data)
    (pool / ".evaluation").unlink()
    old = Run(tmp / "run").evaluation("p")
    ev = evaluate(targets, recon, pool, EvalConfig(class_agnostic=True), progress=False)
    new = Run(tmp / "run").evaluation("p")
    assert new.report["profile"]["assignment"] == "class-agnostic" != old.report["profile"]["assignment"]
    assert all((pool / n).is_symlink() for n in ("evaluation.npz", "report.json", "targets.csv"))
    np.testing.assert_array_equal(new.arrays["d_tar"], ev.result.d_tar)


def _as_unprivileged(args):
    """The CLI in a forked child that dropped root (root may write anywhere): its exit code and stderr.

    Forked, not executed: user nobody could not start the interpreter, which lies under /root.
    """
    import os
    import sys
    import traceback

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            os.dup2(write, 2)
            sys.stderr = open(2, "w", closefd=False)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            code = main(["evaluate", *map(str, args), "--quiet"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err


@pytest.fixture()
def shared_tmp():
    """A folder user nobody can read but not write (pytest's tmp_path is private to root)."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="ddcs-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_read_only_out_and_unreadable_class_fail_at_once(shared_tmp):
    import os
    import shutil

    rng = np.random.default_rng(0)
    targets = _write_tree(shared_tmp / "targets", {"a": _faces(rng, 4, 0)})
    recon = _write_tree(shared_tmp / "recon", {"a": _faces(rng, 4, 0)})
    locked = shared_tmp / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    writable = shared_tmp / "writable"
    writable.mkdir()
    os.chmod(writable, 0o777)
    # --out is checked before the inputs are even looked at: the missing --recon is not what is reported
    code, err = _as_unprivileged(["--targets", targets, "--recon", shared_tmp / "missing", "--out", locked / "o"])
    assert code == 2, err
    assert err.startswith(f"error: --out {locked / 'o'}: cannot write in {locked}") and err.count("\n") == 1
    shutil.copytree(recon, shared_tmp / "recon2")
    os.chmod(shared_tmp / "recon2" / "a", 0o000)
    code, err = _as_unprivileged(["--targets", targets, "--recon", shared_tmp / "recon2", "--out", writable / "o"])
    assert code == 2 and "recon2/a: cannot read folder (Permission denied)" in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_eval_model_is_checked_before_the_images(world, capsys):
    targets, recon, tmp = world
    code, _, err = _cli(["--targets", tmp / "missing", "--recon", recon, "--out", tmp / "o",
                         "--eval-model", tmp / "nope.safetensors"], capsys)
    assert code == 2 and "checkpoint" in err and "nope.safetensors" in err and "missing" not in err
    code, _, err = _cli(["--targets", targets, "--recon", recon, "--out", tmp / "o", "--features", "eval-model"], capsys)
    assert code == 2 and "--features eval-model needs --eval-model" in err and not (tmp / "o").exists()


def test_non_utf8_file_name_does_not_break_the_writer(world, capsys):
    import os

    targets, recon, tmp = world
    src = targets / "person_0" / "000.png"
    os.rename(src, os.path.join(os.fsencode(src.parent), b"caf\xe9.png"))
    for root in (targets, recon):  # a class folder name that is not UTF-8 either, on both sides
        os.rename(root / "person_2", os.path.join(os.fsencode(root), b"Jos\xe9"))
    code, _, err = _cli(["--targets", targets, "--recon", recon, "--out", tmp / "o"], capsys)
    assert code == 0, err
    table = (tmp / "o" / "targets.csv").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in table and ",Jos\\xe9," in table
    report = json.loads((tmp / "o" / "report.json").read_text(encoding="utf-8"))
    assert any("caf\\xe9.png: file name is not valid UTF-8" in w for w in report["warnings"])
    assert "warning: " in err and "not valid UTF-8" in err


def test_bad_npz_and_oversized_inputs_exit_2_with_one_line(world, capsys):
    import io
    import zipfile

    targets, recon, tmp = world
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (600_000, 600_000)})
    with zipfile.ZipFile(tmp / "huge.npz", "w") as zf:  # declares 2.9 TB
        zf.writestr("images.npy", header.getvalue() + b"\0" * 8)
    (tmp / "text.npz").write_text("hello")
    np.savez_compressed(tmp / "big.npz", images=np.zeros((300, 64, 64, 3), np.uint8), labels=np.zeros(300, int))
    cases = [
        (["--recon", tmp / "huge.npz"], "huge.npz: array 'images' declares (600000, 600000) float64 (2.88e+03 GB)"),
        (["--recon", tmp / "text.npz"], "text.npz: not an .npz archive (not a zip file)"),
        (["--recon", tmp / "big.npz", "--max-set-gb", "0.001"], "big.npz: its arrays decode to 0.00 GB, over the cap"),
        (["--recon", recon, "--max-image-pixels", "100"], "declares 32x32 = 0.0 megapixels, over the cap of 0.0"),
    ]
    for args, message in cases:
        code, _, err = _cli(["--targets", targets, "--out", tmp / "o", *args], capsys)
        assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp / "o").exists()


def test_too_few_samples_warn_in_report_and_on_stderr(world, capsys):
    targets, recon, tmp = world
    few = _write_tree(tmp / "few", {f"person_{c}": _faces(np.random.default_rng(c), 1, c) for c in range(3)})
    code, out, err = _cli(["--targets", targets, "--recon", few, "--out", tmp / "o"], capsys)
    assert code == 0
    report = json.loads((tmp / "o" / "report.json").read_text())
    assert report["prdc"]["coverage"] is None
    assert report["fid"]["value"] is not None
    prdc_w = [w for w in report["warnings"] if w.startswith("precision/recall/density/coverage are undefined")]
    fid_w = [w for w in report["warnings"] if w.startswith("FID from 3 reconstructions and 18 targets")]
    assert prdc_w and fid_w and "singular" in fid_w[0] and "k=3" in prdc_w[0]
    assert err.count("warning: ") == 2
    some = _write_tree(tmp / "some", {"person_0": _faces(np.random.default_rng(5), 5, 0),
                                      "person_1": _faces(np.random.default_rng(6), 2, 1)})
    ev = evaluate(targets, some, tmp / "p", progress=False)
    assert ev.report["prdc"]["n_classes"] == 1
    assert any("leave out 2 class(es)" in w and "person_1, person_2" in w for w in ev.report["warnings"])


def test_resize_policy_is_recorded_and_the_profile_says_what_was_done(world, capsys):
    targets, recon, tmp = world
    rng = np.random.default_rng(7)
    wide = {f"person_{c}": [np.asarray(Image.fromarray(x).resize((48, 32))) for x in _faces(rng, 6, c)]
            for c in range(3)}
    wide_root = _write_tree(tmp / "wide", wide)
    ev = evaluate(wide_root, recon, tmp / "o", EvalConfig(size=32, resize="pad"), progress=False)
    r = ev.report
    assert r["profile"]["resize"] == "pad" and "native size" not in r["profile"]["about"]
    assert "32x32 (pad, bilinear)" in r["profile"]["about"]
    assert r["resize"]["policy"] == "pad" and r["resize"]["targets"]["resized"] == 18
    assert r["resize"]["targets"]["native_sizes"] == ["48x32"] and r["resize"]["reconstructions"]["resized"] == 0
    assert not r["warnings"][:-1]  # only the small-sample FID warning
    code, _, err = _cli(["--targets", wide_root, "--recon", recon, "--out", tmp / "s", "--size", "32"], capsys)
    assert code == 0 and "18 non-square image(s) were stretched to 32x32" in err
    code, _, err = _cli(["--targets", targets, "--recon", wide_root, "--out", tmp / "n"], capsys)
    assert code == 2 and "not square; pass --size N (and --resize stretch|center-crop|pad)" in err
