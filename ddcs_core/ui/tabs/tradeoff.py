"""The Trade-off tab: a sweep's FID-vs-attack-strength plot, and a clicked point's grid beside the pre-trained one.

A sweep is a folder `<store>/<name>/sweep.json` (ddcs_core.sweep); the plot is read from its point
runs each time it is opened, so a sweep still running shows its finished points. The browser asks for
a clicked point's grids through the `grids` server function with [sweep, run]; only runs the sweep
lists are answered, and the images are re-encoded (thumbs.grid_data_uri), never served as paths.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import gradio as gr

from ddcs_core.errors import DDCSInputError
from ddcs_core.pool_names import PRETRAINED
from ddcs_core.runs import check_name
from ddcs_core.sweep import SWEEP_FILE, sweep_results
from ddcs_core.sweep_plots import hover, plotly_figure
from ddcs_core.ui import render
from ddcs_core.ui.thumbs import grid_data_uri

EMPTY = '<div class="ddcs-tradeoff-grids">Click a point to see its generator\'s fixed-latent grid beside the pre-trained one.</div>'

# Binds to the plotly graph of #ddcs-tradeoff (again whenever gradio redraws it); a click on a point
# asks the server for that run's grids and shows them in this element.
TRADEOFF_CLICK = """
let latest = '';
function show(html) { const b = element.querySelector('.ddcs-tradeoff-grids'); if (b) b.innerHTML = html; }
function bind() {
  const gd = document.querySelector('#ddcs-tradeoff .js-plotly-plot');
  if (!gd || !gd.on || gd.__ddcsBound) return;
  gd.__ddcsBound = true;
  gd.on('plotly_click', async (ev) => {
    const p = ev.points && ev.points[0];
    if (!p || !p.customdata) return;
    const key = [(gd.layout.meta || {}).sweep || '', p.customdata[0]];
    latest = key.join('|');
    let reply;
    try { reply = await server.grids(key); } catch (e) { reply = {error: String(e)}; }
    if (latest !== key.join('|')) return;
    show(reply.html || `<div class="ddcs-notice ddcs-warn">${String(reply.error || 'no grid').replace(/[&<>"]/g, '')}</div>`);
  });
}
setInterval(bind, 400);
"""


def sweep_names(store_root: str | Path) -> list[str]:
    """The sweep folders of a run store, by name."""
    root = Path(store_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / SWEEP_FILE).is_file())


def _folder(store_root: str | Path, name: str) -> Path:
    folder = Path(store_root) / check_name(str(name), "sweep")
    if not (folder / SWEEP_FILE).is_file():
        raise DDCSInputError(f"{folder}: not a sweep folder (no {SWEEP_FILE})")
    return folder


def tradeoff_view(store_root: str | Path, name: str | None) -> tuple[object, str]:
    """(plotly figure or None, note HTML) of the sweep `name`."""
    if not name:
        return None, render.notice("No sweep in this run store yet: run `python -m ddcs_core sweep --config "
                                   "assets/configs/sweep-demo.yaml --runs <store>`.")
    results = sweep_results(_folder(store_root, name), store_root)
    total = len(results["sweep"]["points"])
    if not results["points"]:
        return None, render.notice(f"Sweep {name}: none of its {total} points has finished yet.")
    fig = plotly_figure(results)
    fig.update_layout(meta={"sweep": name})
    note = (f"Sweep {name}: {len(results['points'])} of {total} points finished; "
            f"{len(results['means'])} (method, λ) means. Hover a point for its numbers, click it for its grid.")
    return fig, render.notice(note)


def grids_html(store_root: str | Path, payload: object) -> dict:
    """{'html'} with a point's fixed-latent grid beside the pre-trained one, or {'error'}; called from
    the browser with [sweep, run], and only for runs that sweep lists."""
    try:
        name, run = payload
        results = sweep_results(_folder(store_root, str(name)), store_root)
        ref = results["reference"]
        point = next((p for p in results["points"] if p["run"] == run), None)
        if point is None and run != ref["run"]:
            raise DDCSInputError(f"{run!r} is not a finished point of sweep {name}")
        shown = [("pre-trained", ref["grid"], hover({**ref, "method": PRETRAINED}))]
        if point is not None:
            shown.append((f"{point['method']} λ={point['lam']:g} seed {point['seed']}", point["grid"], hover(point)))
        cells = "".join(
            f'<figure class="ddcs-tradeoff-grid"><img src="{grid_data_uri(Path(path))}" alt="{escape(title)}">'
            f"<figcaption><b>{escape(title)}</b><br>{text.replace('<br>', ' · ')}</figcaption></figure>"
            for title, path, text in shown)
        return {"html": f'<div class="ddcs-tradeoff-grids" style="display:flex;gap:12px;flex-wrap:wrap">{cells}</div>'}
    except (DDCSInputError, ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        return {"error": str(exc)}


def build_tradeoff_tab(store_root: str | Path) -> gr.Tab:
    """The Trade-off tab (call inside the app's gr.Tabs); it wires its own events."""
    def grids(payload):
        return grids_html(store_root, payload)

    def show(name):
        try:
            return tradeoff_view(store_root, name)
        except DDCSInputError as exc:
            return None, render.notice(str(exc), "error")

    def reload(name):
        names = sweep_names(store_root)
        name = name if name in names else (names[0] if names else None)
        return gr.Dropdown(choices=names, value=name), *show(name)

    with gr.Tab("Trade-off", id="tradeoff") as tab:
        gr.Markdown("### NGD vs entropy as a study\nEach sweep point is one transfer run (method, λ, seed). "
                    "Lower generator FID and a stronger attack (to the right) is better; dashed lines are each "
                    "method's Pareto front over its per-λ means (bars: 95 % bootstrap interval over seeds).")
        with gr.Row():
            sweep_dd = gr.Dropdown(label="Sweep", choices=[], scale=3)
            reload_b = gr.Button("Reload sweeps", size="sm", scale=0, min_width=130)
        note = gr.HTML()
        plot = gr.Plot(elem_id="ddcs-tradeoff", show_label=False)
        gr.HTML(EMPTY, js_on_load=TRADEOFF_CLICK, server_functions=[grids], elem_id="ddcs-tradeoff-side")
    tab.select(reload, sweep_dd, [sweep_dd, plot, note])
    reload_b.click(reload, sweep_dd, [sweep_dd, plot, note])
    sweep_dd.input(show, sweep_dd, [plot, note])
    return tab
