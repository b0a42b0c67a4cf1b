"""The views' answers (views.Explorer), the Evaluate view's path checks, and app.py's options."""

import numpy as np
import pytest
from PIL import Image

import app as app_cli
from ddcs_core.errors import DDCSInputError
from ddcs_core.runs import RunStore
from ddcs_core.ui.sample_run import build_sample_run, smooth_images
from ddcs_core.ui.views import Explorer


@pytest.fixture()
def explorer(tmp_path):
    store = RunStore(tmp_path / "runs")
    build_sample_run(store, "tiny", n_classes=2, per_class=4, recon_per_class=3, pools=("vanilla", "ngd"))
    return Explorer(store.root, device="cpu", data_roots=[tmp_path])


def _tree(root, per_class, seed):
    rng = np.random.default_rng(seed)
    for c in range(2):
        (root / f"person_{c}").mkdir(parents=True)
        for i, img in enumerate(smooth_images(rng, per_class, 32, c)):
            Image.fromarray(img).save(root / f"person_{c}" / f"{i}.png")
    return root


def test_views_answer_for_a_run(explorer):
    assert explorer.run_names() == ["tiny"] and explorer.pools("tiny") == ["ngd", "vanilla"]
    summary, gallery, label, page = explorer.targets_view("tiny", "ngd", page=5, per_page=3)
    assert "DDCS" in summary and gallery.count("ddcs-card") == 2 and label == "Page 3 of 3" and page == 2
    assert "Nearest reconstruction in every pool" in explorer.detail_view("tiny", "ngd", 0)
    assert "Click a target" in explorer.detail_view("tiny", "ngd", None)
    fig, note = explorer.map_view("tiny", "ngd")
    assert fig is None and "No map yet" in note
    grids, metrics, diff = explorer.compare_view("tiny", "ngd", "vanilla")
    assert grids.count("<img") == 2 and "<table" in metrics and "Matched by ngd, not by vanilla" in diff
    html, path = explorer.defense_view("tiny", None)
    assert "most exposed" in html and path.endswith("exports/exposure-all-pools.csv")
    ok = explorer.thumb(["tiny", "recon", "ngd", 0])
    assert ok["src"].startswith("data:image/png;base64,")
    for bad in (["tiny", "recon", "ngd", 999], ["../x", "target", "", 0], ["tiny", "file", "", 0], "junk"):
        assert "error" in explorer.thumb(bad)


def test_views_without_runs(tmp_path):
    ex = Explorer(tmp_path / "empty")
    assert ex.run_names() == []
    summary, gallery, _, _ = ex.targets_view(None, None)
    assert "No runs in" in summary and gallery == ""
    with pytest.raises(DDCSInputError, match="no run selected"):
        ex.data("")


def test_evaluate_view_checks_paths(explorer, tmp_path):
    targets = _tree(tmp_path / "targets", 3, 0)
    (tmp_path / "notes.txt").write_text("x")
    cases = [("", str(targets), "targets folder: enter a path"),
             (str(tmp_path / "missing"), str(targets), "not found under the data roots"),
             ("/etc", str(targets), "not under the data roots"),
             (str(targets), str(tmp_path / "notes.txt"), "must be a folder with one subfolder per class"),
             (str(targets), str(targets), "same folder")]
    for t, r, message in cases:
        with pytest.raises(DDCSInputError, match=message):
            explorer.import_folders(t, r)
    with pytest.raises(DDCSInputError, match="not allowed"):
        explorer.import_folders(str(targets), str(_tree(tmp_path / "recon", 2, 1)), name="../escape")
    with pytest.raises(DDCSInputError, match="taken"):
        explorer.import_folders(str(targets), str(tmp_path / "recon"), name="tiny")
    assert explorer.run_names() == ["tiny"]


def test_evaluate_view_creates_and_evaluates_a_run(explorer, tmp_path):
    targets, recon = _tree(tmp_path / "targets", 4, 0), _tree(tmp_path / "my attack", 3, 1)
    run = explorer.import_folders(str(targets), str(recon), name="", device="cpu", update_map=False)
    assert run.name.startswith("eval-my-attack-") and run.pools() == ["my-attack"]
    status = explorer.runner.wait(run, 120)
    assert status.state == "done", status.message
    assert explorer.pools(run.name) == ["my-attack"]
    assert run.config["targets"] == str(targets.resolve())


def test_run_tab_offers_the_job_that_fits_the_run(explorer):
    from ddcs_core.jobs import load_job_modules

    load_job_modules()
    tiny = explorer.store.run("tiny")
    attack = explorer.store.create("attack", {"kind": "experiment"}, tiny.targets())
    assert explorer.default_job("tiny") == "evaluate" and explorer.default_job(None) == "evaluate"
    assert explorer.default_job(attack.name) == "attack"


def test_cli_options_and_defaults():
    args = app_cli.parse_args([])
    assert (args.runs, args.host, args.port, args.share, args.auth, args.device) == ("runs", "127.0.0.1", 7860, False, None, "auto")
    assert (args.data_root, args.auth_file, args.insecure_no_auth) == (None, None, False)
    assert app_cli.parse_auth("ann:s3:cret") == ("ann", "s3:cret") and app_cli.parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(DDCSInputError, match="user:password"):
            app_cli.parse_auth(bad)
    assert app_cli.main(["--auth", "nopassword", "--runs", "/nonexistent"]) == 2


def test_build_app_wires_every_view(explorer):
    from ddcs_core.ui import build_app

    demo = build_app(explorer=explorer)
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    for tab in ("Targets", "Target detail", "Map", "Compare", "Run", "Defense", "Evaluate"):
        assert tab in labels


def test_timer_redraws_on_a_landing_and_opens_targets_when_the_opened_job_is_done(explorer):
    """on_tick, called as gradio calls it: the status it keeps in gr.State is a session.Status."""
    import threading
    from dataclasses import replace

    import gradio as gr

    from ddcs_core.jobs import _KINDS, register_job
    from ddcs_core.ui import build_app
    from ddcs_core.ui.session import Status

    gate = threading.Event()
    register_job("test-tick", lambda run, params, report, cancelled: gate.wait(30))
    try:
        demo = build_app(explorer=explorer)
        on_tick = next(f.fn for f in demo.fns.values() if f.name == "on_tick")
        session = ("tiny", "ngd", "All classes", "All", 0, None, "run", None, None, None, 30)

        def tick(seen, opened=""):
            out = on_tick(*session, seen, opened)
            return out, next((v for v in out.values() if isinstance(v, Status)), None)

        out, idle = tick(None)
        assert idle == Status.of("tiny", None, explorer.landed("tiny")) and len(out) == 4  # the Run tab's part
        assert tick(idle)[0] == gr.skip()  # nothing changed: nothing redrawn
        redrawn = tick(replace(idle, landed="older"))[0]  # a pool landed: every view shows it
        assert any("Run <b>tiny</b>" in str(v) for v in redrawn.values()) and len(redrawn) > 4
        assert len(tick(replace(idle, run="other", landed="older"))[0]) == 4  # another run's stamp: no landing

        job = explorer.start_job("tiny", "test-tick", {})
        out, running = tick(idle)
        assert running.job == job.id and running.state in ("queued", "running") and len(out) == 4
        gate.set()
        explorer.runner.wait(explorer.store.run("tiny"), 10)
        out, done = tick(running)  # not the job opened from Evaluate: the views redraw, the tab stays
        assert done.state == "done" and len(out) > 4 and "targets" not in out.values()
        out, _ = tick(running, opened=job.id)
        assert "targets" in out.values()  # the tab the session records
        assert any(isinstance(v, gr.Tabs) and v.selected == "targets" for v in out.values())
    finally:
        gate.set()
        _KINDS.pop("test-tick", None)


def test_every_handler_updates_only_what_its_event_lists(explorer):
    """Called as gradio calls them, from each tab, the browsing handlers return only listed outputs
    (gradio refuses any other); the ones that start work or create runs are left to their own tests."""
    import types

    import gradio as gr

    from ddcs_core.ui import build_app
    from ddcs_core.ui.session import FIELDS

    demo = build_app(explorer=explorer)
    fns = [f for f in demo.fns.values() if len(f.inputs) >= len(FIELDS)
           and f.name not in ("on_map_job", "on_rerun", "on_evaluate", "on_attack")]
    session_inputs = next(f.inputs for f in fns if f.name == "on_run")
    assert len(fns) >= 20
    for tab in ("targets", "detail", "map", "compare", "run", "defense"):
        values = ("tiny", "ngd", "All classes", "All", 0, 1, tab, None, None, None, 30)
        by_component = {id(c): v for c, v in zip(session_inputs, values)}
        for f in fns:
            args = [by_component.get(id(c), getattr(c, "value", None)) for c in f.inputs]
            if f.name == "on_tick":
                args[-2:] = [None, ""]  # nothing seen yet, no job opened
            out = f.fn(types.SimpleNamespace(idx=2), *args) if f.name == "on_open" else f.fn(*args)
            assert out != gr.skip() and set(out) <= set(f.outputs), (tab, f.name)
