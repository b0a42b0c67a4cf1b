"""The real app in headless Chromium: summary, a target's detail with both images, the map; the status
line while a job runs; the shipped demo run opening with its pools.

Needs the Debian packages chromium + chromium-driver (/usr/bin/chromium) and the pip package
playwright (its own browser download is never used). Skipped, with the reason, where Chromium cannot
start. With DDCS_SCREENSHOTS=DIR set, test_screenshots also saves one PNG per view into DIR, of the run
DDCS_SCREENSHOT_RUN (e.g. runs/demo) or else of a sample run on LFW faces when the shared datasets are there.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from ddcs_core import shipped_run
from ddcs_core.embedding_map import compute_map
from ddcs_core.jobs import register_job
from ddcs_core.perceptual.weights import cache_dir
from ddcs_core.runs import RunStore
from ddcs_core.ui import fmt
from ddcs_core.ui.sample_run import build_sample_run
from ddcs_core.ui.tabs.tradeoff import sweep_names
from ddcs_core.ui.views import Explorer

CHROMIUM = os.environ.get("DDCS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# gradio's own queue triggers these pandas deprecation notices; they say nothing about the app
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
VIEWS = ("Targets", "Target detail", "Map", "Compare", "Run", "Defense", "Evaluate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def browser(tmp_path):
    """A Chromium page from a fresh profile; skip with the reason where it cannot start."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found: install the Debian packages chromium and chromium-driver")
    with sync_api.sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1400, "height": 1000})
        except Exception as exc:  # the browser itself could not start here
            pytest.skip(f"Chromium cannot start: {str(exc).splitlines()[0]}")
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        context.close()


@pytest.fixture()
def served(tmp_path):
    """The app on a tiny evaluated run with a (PCA) map, on a free localhost port."""
    store = RunStore(tmp_path / "runs")
    run = build_sample_run(store, "tiny", n_classes=3, per_class=5, recon_per_class=4)
    compute_map(run, method="pca", device="cpu")
    yield from _serve(store, run)


def _serve(store, run, explorer=None):
    from ddcs_core.ui import build_app, launch

    demo = build_app(store.root, device="cpu", explorer=explorer)
    port = _free_port()
    launch(demo, store.root, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", run
    finally:
        demo.close()


def _loaded_images(page, selector: str) -> int:
    return page.evaluate(f"""() => [...document.querySelectorAll({selector!r})]
        .filter(img => img.complete && img.naturalWidth > 0).length""")


def _point(page, trace_name: str):
    """Centre of the first marker of a legend-named trace of the map."""
    index = page.evaluate(f"""() => document.querySelector('#ddcs-map .js-plotly-plot').data
        .findIndex(t => t.name === {trace_name!r})""")
    box = page.locator("#ddcs-map .scatterlayer .trace").nth(index).locator(".point").first.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_summary_detail_and_map_in_chromium(browser, served, capfd):
    page, (url, run) = browser, served
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".ddcs-stat")
    report = run.evaluation(run.pools()[0]).report
    summary = page.inner_text("#ddcs-summary")
    for label in ("DDCS", "MATCHED", "COVERAGE", "FID"):
        assert label in summary.upper()
    assert fmt.num(report["ddcs"]) in summary and fmt.pct(report["matched_fraction"]) in summary

    page.locator("#ddcs-gallery .ddcs-card.ddcs-ok").first.click()
    page.wait_for_function("""() => [...document.querySelectorAll('#ddcs-detail img.ddcs-big')]
        .filter(img => img.complete && img.naturalWidth > 0).length === 2""")
    assert _loaded_images(page, "#ddcs-detail img.ddcs-big") == 2
    assert "Contribution to DDCS" in page.inner_text("#ddcs-detail")

    page.get_by_role("tab", name="Map").click()
    page.wait_for_selector("#ddcs-map .js-plotly-plot .scatterlayer .point")
    x, y = _point(page, "targets matched")
    page.mouse.move(x, y)
    page.wait_for_function("() => { const i = document.querySelector('#ddcs-preview img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelectorAll('#ddcs-detail img.ddcs-big').length === 2 && "
                           "document.querySelector('#ddcs-detail').offsetParent !== null")
    time.sleep(2.5)  # a few job-status ticks of the Run view's timer
    assert time.perf_counter() - t0 < 60
    assert "Traceback" not in capfd.readouterr().err, "a handler of the app failed"


def test_status_line_while_a_job_runs(browser, served):
    """Any job on the selected run shows one line above the tabs, whichever tab is open, and goes away after."""
    page, (url, run) = browser, served
    gate = threading.Event()

    def waiting_job(run, params, report, cancelled):
        report(0.25, "1/2 first: working")
        gate.wait(60)

    register_job("e2e-wait", waiting_job)
    store = RunStore(run.path.parent)
    ex = Explorer(store.root, "cpu")
    for url, _ in _serve(store, run, ex):
        page.goto(url)
        page.wait_for_selector(".ddcs-stat")
        assert page.locator("#ddcs-status-line .ddcs-status").count() == 0
        ex.start_job(run.name, "e2e-wait", {})
        try:
            line = page.wait_for_selector("#ddcs-status-line .ddcs-status", timeout=10_000)
            assert "e2e-wait running · step 1/2 first · 25 %" in line.inner_text()
            page.get_by_role("tab", name="Map").click()
            assert page.locator("#ddcs-status-line .ddcs-status").is_visible()
        finally:
            gate.set()
        ex.runner.wait(run, 10)
        page.wait_for_selector("#ddcs-status-line .ddcs-status", state="detached", timeout=10_000)


def test_demo_opens_with_pools(browser, data_root, tmp_path):
    """`make run` on a fresh store: the shipped demo run is installed and opens with its pools, labelled."""
    if not (shipped_run.SHIPPED_RUN / shipped_run.MANIFEST).is_file():
        pytest.skip(f"no shipped demo run in {shipped_run.SHIPPED_RUN} (`python -m ddcs_core demo ship-run`)")
    users_lfw = Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "ddcs" / "lfw"
    if users_lfw.is_dir() and not (cache_dir() / "lfw").exists():  # decoded faces, read-only: saves minutes
        shutil.copytree(users_lfw, cache_dir() / "lfw")
    os.environ.setdefault("DDCS_DATA", str(data_root))
    ex = Explorer(tmp_path / "runs", "cpu")
    t0 = time.perf_counter()
    run = ex.ensure_demo_run(progress=False)
    installed_s = time.perf_counter() - t0
    assert ex.job_status(run.name) is None and run.pools()  # finished: nothing to attack
    page = browser
    for url, _ in _serve(ex.store, run, ex):
        page.goto(url)
        page.wait_for_selector(".ddcs-stat")
        assert "Precomputed results" in page.inner_text("body")
        pool = page.locator("#ddcs-pool input").input_value()
        assert pool == next((p for p in run.pools() if p.startswith("dual-")), run.pools()[0])  # the paper's D_rec
        assert fmt.num(run.evaluation(pool).report["ddcs"]) in page.inner_text("#ddcs-summary")
        page.wait_for_function("""() => [...document.querySelectorAll('#ddcs-gallery img')]
            .filter(img => img.complete && img.naturalWidth > 0).length >= 40""")
        assert page.locator("#ddcs-status-line .ddcs-status").count() == 0
        page.get_by_role("tab", name="Run").click()
        assert page.get_by_role("button", name="Re-run the demo attack").is_visible()
    print(f"shipped demo run installed in {installed_s:.1f} s")


@pytest.mark.skipif(not os.environ.get("DDCS_SCREENSHOTS"), reason="set DDCS_SCREENSHOTS=DIR to save screenshots")
def test_screenshots(browser, tmp_path):
    """One PNG per view into $DDCS_SCREENSHOTS, on LFW faces when available (UMAP map, grids)."""
    out = Path(os.environ["DDCS_SCREENSHOTS"])
    out.mkdir(parents=True, exist_ok=True)
    lfw = Path(os.environ.get("DDCS_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets")) / "lfw-deepfunneled"
    if os.environ.get("DDCS_SCREENSHOT_RUN"):  # a real run, e.g. runs/demo: its store is served as it is
        given = Path(os.environ["DDCS_SCREENSHOT_RUN"])
        store, run = RunStore(given.parent), RunStore(given.parent).run(given.name)
        assert run.exists(), f"{given}: not a run"
    else:
        store = RunStore(tmp_path / "runs")
        run = build_sample_run(store, "lfw-sample" if lfw.is_dir() else "sample", n_classes=6, per_class=8,
                               recon_per_class=6, pools=("vanilla", "entropy", "ngd"), size=64,
                               faces=lfw if lfw.is_dir() else None)
        compute_map(run, device="cpu", n_neighbors=10)
    page = browser
    for url, _ in _serve(store, run):
        page.goto(url)
        page.wait_for_selector(".ddcs-stat")
        for view in VIEWS:
            if view == "Target detail":  # a matched target (the first pages of a real run hold the unmatched)
                page.get_by_label("Matched", exact=True).check()
                page.locator("#ddcs-gallery .ddcs-card.ddcs-ok").nth(2).click()
            else:
                page.get_by_role("tab", name=view).click()
            if view == "Map" and os.environ.get("DDCS_SCREENSHOT_RUN"):  # large maps draw with WebGL: no SVG points
                page.wait_for_selector("#ddcs-map .js-plotly-plot")
            elif view == "Map":
                page.wait_for_selector("#ddcs-map .scatterlayer .point")
                page.mouse.move(*_point(page, "targets unmatched"))
                page.wait_for_selector("#ddcs-preview img")
            if view == "Run" and os.environ.get("DDCS_SCREENSHOT_RUN"):  # the attack settings of a new run
                page.get_by_text("New attack run on the demo world").click()
            elif view == "Run":  # a real job, so the progress bar and the log have something to show
                page.get_by_role("button", name="Start evaluate").click()
                page.wait_for_selector(".ddcs-job-done", timeout=120_000)
            time.sleep(1.5)
            page.screenshot(path=str(out / f"{view.lower().replace(' ', '-')}.png"), full_page=True)
        if sweep_names(store.root):  # a store with a sweep (e.g. runs/sweep-demo beside runs/demo): its plot
            page.get_by_role("tab", name="Trade-off").click()
            page.wait_for_selector("#ddcs-tradeoff .js-plotly-plot")
            time.sleep(1.5)
            page.screenshot(path=str(out / "tradeoff.png"), full_page=True)
