"""The Map: coordinates computed once per run (embedding_map) and the traces drawn from them (map_data)."""

import numpy as np
import pytest

from ddcs_core.embedding_map import MapCancelled, compute_map, ensure_map, map_is_current
from ddcs_core.errors import DDCSInputError
from ddcs_core.runs import RunStore
from ddcs_core.ui.map_data import MATCHED, UNMATCHED, figure, map_data
from ddcs_core.ui.rundata import RunData
from ddcs_core.ui.sample_run import build_sample_run


@pytest.fixture()
def run(tmp_path):
    return build_sample_run(RunStore(tmp_path), "tiny", n_classes=2, per_class=4, recon_per_class=3,
                            pools=("vanilla", "ngd"), grids=False)


def test_pca_map_is_stored_with_what_it_covers(run):
    arrays = compute_map(run, method="pca")
    stored = run.map()
    assert set(arrays) == set(stored)
    assert stored["target_xy"].shape == (8, 2) and stored["recon_xy"].shape == (12, 2)
    assert list(stored["pools"]) == ["ngd", "vanilla"] and str(stored["method"]) == "pca"
    assert np.isfinite(stored["target_xy"]).all() and np.isfinite(stored["recon_xy"]).all()
    assert np.bincount(stored["recon_pool"]).tolist() == [6, 6]
    assert sorted(stored["recon_index"][stored["recon_pool"] == 0].tolist()) == list(range(6))
    assert map_is_current(run)
    again = ensure_map(run, method="pca")  # current: read back, not recomputed
    np.testing.assert_array_equal(again["target_xy"], stored["target_xy"])
    recon, _ = run.recon("ngd")
    run.write_recon("entropy", recon)
    assert not map_is_current(run)


def test_cancel_leaves_nothing_behind(run):
    with pytest.raises(MapCancelled):
        compute_map(run, method="pca", cancelled=lambda: True)
    assert run.map() is None
    with pytest.raises(DDCSInputError, match="umap or pca"):
        compute_map(run, method="tsne")


@pytest.mark.slow
def test_umap_map_is_deterministic_and_follows_new_pools(run):
    first = compute_map(run, n_neighbors=5, n_epochs=30)
    assert str(first["method"]) == "umap" and first["target_xy"].shape == (8, 2)
    recon, _ = run.recon("ngd")
    run.write_recon("entropy", recon)
    second = ensure_map(run, n_neighbors=5, n_epochs=30)
    assert list(second["pools"]) == ["entropy", "ngd", "vanilla"] and second["recon_xy"].shape == (18, 2)
    third = compute_map(run, n_neighbors=5, n_epochs=30)
    np.testing.assert_allclose(third["recon_xy"], second["recon_xy"], rtol=1e-5, atol=1e-5)


def test_traces_split_targets_and_pools(run):
    data = RunData(run)
    assert map_data(data, "ngd").message.startswith("No map yet")
    compute_map(run, method="pca")
    data = RunData(run)
    md = map_data(data, "ngd")
    names = [t.name for t in md.traces]
    assert names == ["ngd reconstructions", "vanilla reconstructions", "targets matched", "targets unmatched"]
    matched = data.evaluation("ngd").arrays["matched"].astype(bool)
    by_name = {t.name: t for t in md.traces}
    assert len(by_name["targets matched"].x) == matched.sum() and by_name["targets matched"].color == MATCHED
    assert by_name["targets unmatched"].color == UNMATCHED
    kind, pool, index, opens = by_name["ngd reconstructions"].customdata[0]
    assert kind == "recon" and pool == "ngd"
    assert opens == data.evaluation("ngd").arrays["recon_assigned"][index]
    t = by_name["targets matched"].customdata[0]
    assert t[0] == "target" and t[2] == t[3]
    assert md.n_points == 20 and not md.webgl and not md.stale
    fig = figure(md, "tiny")
    assert fig.layout.meta["run"] == "tiny" and len(fig.data) == 4


def test_stale_map_is_flagged(run):
    compute_map(run, method="pca")
    recon, _ = run.recon("ngd")
    run.write_recon("entropy", recon)
    md = map_data(RunData(run), "ngd")
    assert md.stale and "recompute" in md.message
    assert "entropy reconstructions" not in [t.name for t in md.traces]
