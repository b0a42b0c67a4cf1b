"""Scatter traces of the Map from the coordinates stored in map.npz and one pool's evaluation.

Targets are split into matched and unmatched (for the chosen pool), reconstructions are grouped by
pool. Every point carries [kind, pool, index, target-to-open] as customdata: the browser uses it to
fetch the hovered thumbnail and to open the clicked target's detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from ddcs_core.ui import fmt
from ddcs_core.ui.rundata import RunData

if TYPE_CHECKING:
    import plotly.graph_objects as go

MATCHED = "#2a9d8f"
UNMATCHED = "#e76f51"
POOL_COLOURS = ("#6c8ebf", "#c9a227", "#9b7fc4", "#7fb38f", "#c98a9a", "#8c8c8c")
WEBGL_ABOVE = 5000


@dataclass
class Trace:
    name: str
    x: np.ndarray
    y: np.ndarray
    color: str
    size: float
    opacity: float
    symbol: str
    customdata: list
    hovertext: list[str]
    group: str


@dataclass
class MapData:
    traces: list[Trace] = field(default_factory=list)
    method: str = ""
    stale: bool = False
    message: str = ""

    @property
    def n_points(self) -> int:
        return int(sum(len(t.x) for t in self.traces))

    @property
    def webgl(self) -> bool:
        return self.n_points > WEBGL_ABOVE


def map_data(data: RunData, pool: str | None) -> MapData:
    """Traces for the run's stored map; a message instead when there is none or it no longer fits."""
    arrays = data.map()
    if arrays is None:
        return MapData(message="No map yet for this run: compute it (Run view, job 'map').")
    target_xy = arrays["target_xy"]
    n = len(data.targets)
    if len(target_xy) != n:
        return MapData(stale=True, message=f"The stored map covers {len(target_xy)} targets but the run has {n}; "
                                           "recompute it (job 'map').")
    stored_pools = [str(p) for p in arrays["pools"]]
    stale = sorted(stored_pools) != sorted(data.pools)
    out = MapData(method=str(arrays.get("method", "")), stale=stale,
                  message="The map predates the current pools; recompute it (job 'map') to include them." if stale else "")
    names, labels = data.targets.class_names, data.targets.labels
    for i, p in enumerate(stored_pools):
        if p not in data.pools:
            continue
        sel = np.flatnonzero(arrays["recon_pool"] == i)
        idx = arrays["recon_index"][sel]
        recon = data.recon(p)
        if len(idx) and idx.max() >= len(recon):
            out.stale = True
            out.message = f"Pool {p} changed since the map was made; recompute it (job 'map')."
            continue
        assigned = _assigned(data, p, len(recon))
        hover = [f"<b>{escape(p)}</b> · reconstruction {j}<br>{escape(recon.class_names[int(recon.labels[j])])}"
                 + (f" → target {assigned[j]}" if assigned[j] >= 0 else "") for j in idx]
        out.traces.append(Trace(f"{p} reconstructions", arrays["recon_xy"][sel, 0], arrays["recon_xy"][sel, 1],
                                POOL_COLOURS[i % len(POOL_COLOURS)], 5, 0.5, "circle",
                                [["recon", p, int(j), int(assigned[j])] for j in idx], hover, "reconstructions"))
    if pool is not None and pool in data.evaluated:
        a = data.evaluation(pool).arrays
        matched, d_tar, ranks = a["matched"].astype(bool), a["d_tar"], data.ranks(pool)
        groups = [("targets matched", MATCHED, matched), ("targets unmatched", UNMATCHED, ~matched)]
    else:
        d_tar, ranks = np.full(n, np.inf), np.zeros(n, np.int64)
        groups = [("targets", UNMATCHED, np.ones(n, bool))]
    for name, colour, mask in groups:
        sel = np.flatnonzero(mask)
        hover = [f"<b>target {t}</b> · {escape(names[int(labels[t])])}<br>"
                 + (f"rank {ranks[t]} · d_tar {fmt.num(d_tar[t])}" if ranks[t] else "not evaluated") for t in sel]
        out.traces.append(Trace(name, target_xy[sel, 0], target_xy[sel, 1], colour, 9, 0.95, "diamond",
                                [["target", "", int(t), int(t)] for t in sel], hover, "targets"))
    return out


def _assigned(data: RunData, pool: str, n_recon: int) -> np.ndarray:
    """Each reconstruction's assigned target in the pool's evaluation, -1 where unknown."""
    if pool in data.evaluated:
        assigned = data.evaluation(pool).arrays["recon_assigned"]
        if len(assigned) == n_recon:
            return assigned.astype(np.int64)
    return np.full(n_recon, -1, np.int64)


def figure(md: MapData, run: str, height: int = 600) -> go.Figure:
    """The plotly figure; layout.meta carries the run name for the browser's thumbnail requests."""
    import plotly.graph_objects as go

    scatter = go.Scattergl if md.webgl else go.Scatter
    fig = go.Figure()
    for t in md.traces:
        fig.add_trace(scatter(
            x=t.x, y=t.y, mode="markers", name=t.name, legendgroup=t.group, customdata=t.customdata,
            hovertext=t.hovertext, hovertemplate="%{hovertext}<extra></extra>",
            marker={"color": t.color, "size": t.size, "opacity": t.opacity, "symbol": t.symbol,
                    "line": {"width": 0.6, "color": "white"} if t.group == "targets" else {"width": 0}},
        ))
    fig.update_layout(
        meta={"run": run}, height=height, template="plotly_white", margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "font": {"size": 12}},
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}, hovermode="closest",
        font={"family": "Inter, system-ui, sans-serif", "color": "#334155"},
        hoverlabel={"bgcolor": "white", "font": {"size": 12}}, dragmode="pan",
    )
    return fig
