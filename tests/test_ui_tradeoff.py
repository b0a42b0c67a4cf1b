"""The Trade-off tab: sweeps listed from the store, the plot from their runs, grids only for listed runs."""

import json

import gradio as gr
import numpy as np
from PIL import Image

from ddcs_core.sweep import SWEEP_FILE
from ddcs_core.ui.tabs.tradeoff import build_tradeoff_tab, grids_html, sweep_names, tradeoff_view


def fake_sweep(root):
    """A finished two-method sweep as its files (no models): points, the reference, grids."""
    points = []
    for method, mode, lam, seed, fid, conf in (("entropy", "entropy", 0.01, 0, 110.0, 0.6),
                                               ("entropy", "entropy", 0.01, 1, 115.0, 0.62),
                                               ("ngd", "ngd", 0.03, 0, 100.0, 0.4), ("ngd", "ngd", 0.03, 1, 104.0, 0.42)):
        run = f"s.{method}.lam{lam:g}.s{seed}"
        points.append({"method": method, "mode": mode, "lam": lam, "seed": seed, "run": run})
        (root / run / "generators").mkdir(parents=True)
        (root / run / "generators" / f"{mode}.json").write_text(json.dumps(
            {"fid": fid, "victim_confidence": conf, "victim_entropy": 1.0, "features": "f"}))
        (root / run / "grids").mkdir()
        Image.fromarray(np.full((8, 8, 3), seed * 100, np.uint8)).save(root / run / "grids" / f"{mode}.png")
    ref = root / "s.pretrained"
    (ref / "generators").mkdir(parents=True)
    (ref / "generators" / "pretrained.json").write_text(json.dumps({"fid": 99.0, "victim_confidence": 0.3}))
    (ref / "grids").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ref / "grids" / "pretrained.png")
    (root / "s").mkdir()
    (root / "s" / SWEEP_FILE).write_text(json.dumps({"kind": "sweep", "name": "s", "reference": "s.pretrained",
                                                     "points": points, "bootstrap": {"resamples": 200, "seed": 0}}))
    (root / "notasweep").mkdir()


def test_tradeoff_view_plot_and_grids(tmp_path):
    fake_sweep(tmp_path)
    assert sweep_names(tmp_path) == ["s"]
    fig, note = tradeoff_view(tmp_path, "s")
    assert "4 of 4 points" in note and fig.layout.meta["sweep"] == "s"
    clickable = [d for d in fig.data if d.customdata is not None]
    runs = {c[0] for d in clickable for c in d.customdata}
    assert runs == {"s.entropy.lam0.01.s0", "s.entropy.lam0.01.s1", "s.ngd.lam0.03.s0", "s.ngd.lam0.03.s1",
                    "s.pretrained"}
    assert any("λ=0.01 seed 1" in t for d in clickable for t in (d.text or ()))
    reply = grids_html(tmp_path, ["s", "s.ngd.lam0.03.s1"])
    assert reply["html"].count("data:image/png;base64,") == 2 and "seed 1" in reply["html"]
    assert "error" in grids_html(tmp_path, ["s", "other-run"])
    assert "error" in grids_html(tmp_path, ["../s", "s.pretrained"])
    assert "error" in grids_html(tmp_path, ["notasweep", "x"])
    assert tradeoff_view(tmp_path, None)[0] is None
    with gr.Blocks():
        with gr.Tabs():
            build_tradeoff_tab(tmp_path)
