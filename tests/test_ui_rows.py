"""The app's pure view data (rows, render, rundata, thumbs, fmt) on a tiny, really evaluated run."""

import base64
import csv
import io
import math

import numpy as np
import pytest
from PIL import Image

from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.evaluate import EvalConfig, evaluate_sets
from ddcs_core.metrics.ddcs import hardest_first
from ddcs_core.runs import RunStore
from ddcs_core.ui import fmt, render, rows
from ddcs_core.ui.rundata import RunCache, RunData, ranks_of
from ddcs_core.ui.thumbs import grid_data_uri, png_data_uri

N_CLASSES, PER_CLASS = 3, 5


def _images(rng, n, label):
    base = np.random.default_rng(label).integers(0, 256, (1, 4, 4, 3))
    low = np.clip(base + rng.normal(0, 30, (n, 4, 4, 3)), 0, 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(x).resize((32, 32), Image.BILINEAR)) for x in low])


def _set(rng, per_class, source, names):
    imgs = np.concatenate([_images(rng, per_class, c) for c in range(len(names))])
    labels = np.repeat(np.arange(len(names)), per_class).astype(np.int64)
    return ImageSet(imgs, labels, names, [f"{source}/{names[l]}/{i}.png" for i, l in enumerate(labels)], source)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes x 5 targets; pool 'ngd' with 4 reconstructions per class, 'vanilla' with 1, 'pending' unevaluated."""
    rng = np.random.default_rng(0)
    names = ["alice", "bob", "<b>carol</b>"]
    store = RunStore(tmp_path_factory.mktemp("store"))
    targets = _set(rng, PER_CLASS, "targets", names)
    run = store.create("tiny", {"seed": 0}, targets)
    for pool, per_class in (("ngd", 4), ("vanilla", 1)):
        recon = _set(rng, per_class, pool, names)
        run.write_recon(pool, recon)
        run.write_evaluation(pool, evaluate_sets(targets, recon, EvalConfig(device="cpu")))
    run.write_recon("pending", _set(rng, 1, "pending", names))
    return store, run


@pytest.fixture()
def data(tiny):
    return RunData(tiny[1])


def test_hardest_first_matches_the_engines_ranking(data, tiny):
    a = data.evaluation("ngd").arrays
    order = data.order("ngd")
    matched = a["matched"].astype(bool)
    n_unmatched = int((~matched).sum())
    assert not matched[order[:n_unmatched]].any() and matched[order[n_unmatched:]].all()
    d = a["d_tar"][order[n_unmatched:]]
    assert np.all(np.diff(d) <= 0)
    with open(tiny[1].pool_dir("ngd") / "targets.csv") as f:
        csv_paths = [r["path"] for r in csv.DictReader(f)]
    assert [data.targets.paths[i] for i in order] == csv_paths
    assert ranks_of(order)[order[0]] == 1
    assert list(hardest_first(np.array([0.5, np.inf, 0.1, 0.5]), np.array([1, 0, 1, 1], bool))) == [1, 0, 3, 2]


def test_summary_is_formatted_with_its_feature_name(data):
    report = data.evaluation("ngd").report
    stats = {s.label: s for s in rows.summary(report)}
    assert list(stats) == ["DDCS", "DDCS avg", "Matched", "Coverage", "Attack accuracy", "FID"]
    assert stats["DDCS"].value == fmt.num(report["ddcs"])
    assert stats["Matched"].value == fmt.pct(report["matched_fraction"])
    assert f"{report['matched']} of 15" in stats["Matched"].note
    assert stats["Attack accuracy"].value == "—" and "no evaluation model" in stats["Attack accuracy"].note
    assert report["fid"]["features"] in stats["FID"].note
    assert "fast profile" in rows.profile_line(report) and "LPIPS-alex" in rows.profile_line(report)


def test_gallery_pages_filters_and_cards(data):
    full = rows.gallery_page(data, "ngd", page=0, per_page=4)
    assert full.n_total == 15 and full.n_pages == 4 and len(full.cards) == 4
    last = rows.gallery_page(data, "ngd", page=99, per_page=4)
    assert last.page == 3 and len(last.cards) == 3
    assert [c.rank for c in full.cards] == [1, 2, 3, 4]
    for c in full.cards + last.cards:
        assert c.target_src.startswith("data:image/jpeg;base64,")
        assert (c.recon >= 0) == c.matched == bool(c.recon_src)
    bob = rows.gallery_page(data, "ngd", per_page=50, label="bob")
    assert bob.n_filtered == PER_CLASS and {c.label for c in bob.cards} == {"bob"}
    unmatched = rows.gallery_page(data, "vanilla", per_page=50, status="Unmatched")
    matched = rows.gallery_page(data, "vanilla", per_page=50, status="Matched")
    assert unmatched.n_filtered + matched.n_filtered == 15
    assert not any(c.matched for c in unmatched.cards) and all(c.matched for c in matched.cards)
    with pytest.raises(DDCSInputError, match="class"):
        rows.gallery_page(data, "ngd", label="nobody")
    with pytest.raises(DDCSInputError, match="not been evaluated"):
        rows.gallery_page(data, "pending")


def test_detail_covers_every_pool(data):
    order = data.order("vanilla")
    target = int(order[-1])  # the easiest, certainly matched
    d = rows.detail(data, "vanilla", target)
    a = data.evaluation("vanilla").arrays
    assert d.hit.matched and d.hit.d_tar == pytest.approx(a["d_tar"][target])
    assert d.hit.contribution == pytest.approx(1 / (15 * a["d_tar"][target]))
    assert d.hit.rank == 15 and d.hit.recon == a["nearest"][target] and d.hit.recon_src
    assert [h.pool for h in d.others] == ["ngd", "pending", "vanilla"]
    assert not d.others[1].evaluated
    assert rows.neighbour(data, "vanilla", target, +1) == int(order[0])
    assert rows.neighbour(data, "vanilla", int(order[0]), -1) == target
    hard = rows.detail(data, "vanilla", int(order[0]))
    assert not hard.hit.matched and hard.hit.recon == -1 and math.isinf(hard.hit.d_tar)
    # an unmatched target still shows its class's nearest reconstruction, and whom DDCS gave it to
    c = hard.hit.closest
    recon = data.recon("vanilla")
    assert c is not None and c.src and recon.labels[c.recon] == data.targets.labels[int(order[0])]
    assert a["recon_assigned"][c.recon] == c.assigned_to and a["matched"][c.assigned_to]
    assert c.assigned_d <= c.d and c.assigned_rank == data.ranks("vanilla")[c.assigned_to]
    html = render.detail(hard)
    assert "ddcs-dim" in html and f"assigned to target #{c.assigned_rank}" in html
    assert rows.detail(data, "vanilla", target).hit.closest is None  # matched: its own reconstruction
    for bad in (-1, 15, "3"):
        with pytest.raises(DDCSInputError, match="out of range"):
            rows.detail(data, "vanilla", bad)


def test_metrics_rows_and_differences(data):
    by_pool = {m.pool: m for m in rows.metrics_rows(data)}
    assert set(by_pool) == {"ngd", "pending", "vanilla"}
    assert not by_pool["pending"].evaluated and by_pool["ngd"].evaluated
    assert by_pool["ngd"].ddcs == pytest.approx(data.evaluation("ngd").report["ddcs"])
    assert by_pool["ngd"].reconstructions == 12
    diff = rows.match_difference(data, "ngd", "vanilla")
    ma = data.evaluation("ngd").arrays["matched"].astype(bool)
    mb = data.evaluation("vanilla").arrays["matched"].astype(bool)
    assert set(diff.a_only) == set(np.flatnonzero(ma & ~mb)) and set(diff.b_only) == set(np.flatnonzero(mb & ~ma))
    assert diff.both + diff.neither + len(diff.a_only) + len(diff.b_only) == 15
    d_a = data.evaluation("ngd").arrays["d_tar"][diff.a_only]
    assert np.all(np.diff(d_a) >= 0)
    with pytest.raises(DDCSInputError, match="different"):
        rows.match_difference(data, "ngd", "ngd")
    assert rows.default_pair(["entropy", "ngd", "vanilla"]) == ("ngd", "entropy")
    assert rows.default_pair(["a", "b"]) == ("b", "a")
    assert rows.default_pair(["a"]) == ("a", None) and rows.default_pair([]) == (None, None)


def test_exposure_ranking_and_csv(data, tiny):
    ranking = rows.exposure_ranking(data, rows.ALL_POOLS)
    assert len(ranking) == 15 and [r.rank for r in ranking] == list(range(1, 16))
    d = [r.d_tar for r in ranking]
    assert d == sorted(d)
    best = np.minimum(data.evaluation("ngd").arrays["d_tar"], data.evaluation("vanilla").arrays["d_tar"])
    assert sorted(d) == sorted(best.tolist())
    assert all(r.pool in ("ngd", "vanilla") for r in ranking if r.matched)
    assert all(not r.matched and r.pool == "" for r in ranking if math.isinf(r.d_tar))
    path = rows.write_exposure_csv(data, "vanilla")
    assert path.parent == (tiny[1].path / "exports").resolve() and path.name == "exposure-vanilla.csv"
    lines = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(lines) == 15 and lines[0]["rank"] == "1" and "path" in lines[0]


def test_grid_files_are_ordered_and_confined(data, tiny):
    grids = tiny[1].path / "grids"
    grids.mkdir(exist_ok=True)
    for name in ("ngd", "entropy", "vanilla", "zzz"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(grids / f"{name}.png")
    (grids / "notes.txt").write_text("not a grid")
    (grids / "broken.png").write_bytes(b"not a png")
    found = rows.grid_files(data)
    assert [n for n, _ in found] == ["vanilla", "entropy", "ngd", "broken", "zzz"]
    assert all(p.is_relative_to(tiny[1].path.resolve()) for _, p in found)
    assert grid_data_uri(found[0][1]).startswith("data:image/png;base64,")
    with pytest.raises(DDCSInputError, match="broken.png"):
        grid_data_uri(found[3][1])


def test_thumbnails_come_from_the_arrays(data):
    uri = data.thumb("target", 2, max_side=16)
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (16, 16)
    assert data.thumb("target", 2, max_side=16) is uri  # cached
    full = Image.open(io.BytesIO(base64.b64decode(png_data_uri(data.targets.images[2]).split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(full), data.targets.images[2])
    with pytest.raises(DDCSInputError, match="out of range"):
        data.thumb("target", 99)
    with pytest.raises(DDCSInputError, match="no pool"):
        data.thumb("recon", 0, "nope")


def test_run_cache_reloads_changed_runs(tiny):
    store, run = tiny
    cache = RunCache(store)
    first = cache.get("tiny")
    assert cache.get("tiny") is first
    (run.path / "map.npz").write_bytes(b"")
    assert cache.get("tiny") is not first
    (run.path / "map.npz").unlink()
    for bad in ("../tiny", "", "nope"):
        with pytest.raises(DDCSInputError):
            cache.get(bad)


def test_render_escapes_and_formats(data):
    page = rows.gallery_page(data, "ngd", per_page=50, label="<b>carol</b>")
    html = render.gallery(page)
    assert "&lt;b&gt;carol&lt;/b&gt;" in html and "<b>carol</b>" not in html
    assert html.count('class="ddcs-card') == PER_CLASS and 'data-idx="' in html
    detail = render.detail(rows.detail(data, "ngd", int(page.cards[0].target)))
    assert "<b>carol</b>" not in detail and "Nearest reconstruction in every pool" in detail
    table = render.metrics_table(rows.metrics_rows(data))
    assert "not evaluated yet" in table and "lpips-alex" in table
    assert render.notice("<x>") == '<div class="ddcs-notice ddcs-info">&lt;x&gt;</div>'


def test_formatting():
    assert fmt.num(None) == "—" and fmt.num(float("nan")) == "—" and fmt.num(float("inf")) == "∞"
    assert fmt.num(0.123456) == "0.1235" and fmt.num(0) == "0" and fmt.num(123456.7) == "123,457"
    assert fmt.pct(0.5) == "50.0 %" and fmt.pct(None) == "—" and fmt.count(12345) == "12,345"


def test_unmatched_cards_show_the_class_nearest_dimmed(data):
    page = rows.gallery_page(data, "vanilla", status="Unmatched", per_page=50)
    assert page.cards and all(c.closest is not None and c.recon == -1 for c in page.cards)
    html = render.gallery(page)
    assert html.count("ddcs-dim") == len(page.cards) and "not reached" not in html
    c = page.cards[0]
    assert f"assigned to #{c.closest.assigned_rank}, d = {fmt.num(c.closest.d, 3)}" in html
    old = data.evaluation("vanilla")  # an evaluation stored before the closest reconstruction was recorded
    arrays = {k: v for k, v in old.arrays.items() if k not in ("closest", "closest_dist")}
    data._eval["vanilla"] = type(old)(old.report, arrays)
    try:
        assert rows.card(data, "vanilla", c.target).closest is None
        assert "not reached" in render.card(rows.card(data, "vanilla", c.target))
    finally:
        data._eval["vanilla"] = old


def test_paths_show_relative_to_the_data_root():
    assert rows.shown_path("/build/data/lfw-deepfunneled/Ann/Ann_0001.jpg", "/build/data/lfw-deepfunneled") == \
        "lfw-deepfunneled/Ann/Ann_0001.jpg"
    assert rows.shown_path("/x/y/z/Ann/Ann_0001.jpg", "/elsewhere/lfw") == "z/Ann/Ann_0001.jpg"
    assert rows.shown_path("targets/alice/0.png", "targets") == "targets/alice/0.png"


def test_targets_page_before_any_pool(data):
    page = rows.targets_page(data, page=1, per_page=4)
    assert [c.target for c in page.cards] == [4, 5, 6, 7] and page.n_pages == 4 and page.n_filtered == 15
    assert all(c.rank == 0 and c.recon == -1 and c.target_src for c in page.cards)
    bob = rows.targets_page(data, label="bob")
    assert {c.label for c in bob.cards} == {"bob"} and bob.n_filtered == PER_CLASS
    html = render.targets_only(page)
    assert html.count("<img") == 4 and "Targets 5–8 of 15" in html
