"""The trade-off plot of a sweep: generator FID against attack strength, one colour per method.

Every seed is a small point, each (method, λ) mean a large one with its 95 % bootstrap interval as
bars in both directions, and each method's Pareto front over its means a dashed line; the pre-trained
generator is a black star. Lower FID (closer to the public images) and more to the right (a more
confident victim, a stronger attack) is better, so a method whose front lies below-right of another's
dominates it. Panels: victim confidence on the fixed latents, and, when the points inverted, attack
accuracy and DDCS of their pools. `plotly_figure` is the interactive one (the HTML and the app, each
seed point carrying its run name for a click), `write_png` the same with matplotlib.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from ddcs_core import atomic
from ddcs_core.tradeoff import pareto_front

PANELS = (("victim_confidence", "victim confidence on fixed latents ↑"), ("acc1", "attack accuracy (top-1) ↑"),
          ("ddcs", "DDCS ↑"))
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def panels(results: dict) -> list[tuple[str, str]]:
    """The x metrics that at least one point has (victim confidence always)."""
    return [(m, t) for m, t in PANELS if m == "victim_confidence" or any(p.get(m) is not None for p in results["points"])]


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _methods(results: dict) -> list[str]:
    return list(dict.fromkeys(p["method"] for p in results["points"]))


def _front(means: list[dict], metric: str) -> list[dict]:
    rows = [r for r in means if _ok(r.get(metric)) and _ok(r.get("gen_fid"))]
    return [rows[i] for i in pareto_front([r["gen_fid"] for r in rows], [r[metric] for r in rows])]


def hover(p: dict) -> str:
    """A point's hover text: method, λ, seed and its numbers."""
    head = f"<b>{p['method']}</b>"
    if "lam" in p:
        head += f" λ={p['lam']:g}" + (f" seed {p['seed']}" if "seed" in p else f" (mean of {p['n']} seeds)")
    parts = [head]
    for key, label, pct in (("gen_fid", "FID", False), ("victim_confidence", "victim conf.", True),
                            ("victim_entropy", "victim entropy", False), ("acc1", "attack acc", True),
                            ("ddcs", "DDCS", False), ("coverage", "coverage", True)):
        v = p.get(key)
        if _ok(v):
            parts.append(f"{label}: {100 * v:.1f} %" if pct else f"{label}: {v:.4g}")
    if "run" in p:
        parts.append(f"run {p['run']}")
    return "<br>".join(parts)


def plotly_figure(results: dict):
    """The interactive figure; seed points carry `customdata` = [run name] (the app opens its grid)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = panels(results)
    fig = make_subplots(rows=1, cols=len(cols), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[t for _, t in cols])
    ref = results["reference"]
    for c, (metric, title) in enumerate(cols, start=1):
        first = c == 1
        for i, method in enumerate(_methods(results)):
            colour = COLOURS[i % len(COLOURS)]
            pts = [p for p in results["points"] if p["method"] == method and _ok(p.get(metric))]
            fig.add_trace(go.Scatter(
                x=[p[metric] for p in pts], y=[p["gen_fid"] for p in pts], mode="markers", name=method,
                legendgroup=method, showlegend=first, marker={"color": colour, "size": 7, "opacity": 0.45},
                customdata=[[p["run"]] for p in pts], text=[hover(p) for p in pts],
                hovertemplate="%{text}<extra></extra>"), row=1, col=c)
            means = [r for r in results["means"] if r["method"] == method and _ok(r.get(metric))]
            fig.add_trace(go.Scatter(
                x=[r[metric] for r in means], y=[r["gen_fid"] for r in means], mode="markers+text",
                name=f"{method} mean", legendgroup=method, showlegend=False,
                marker={"color": colour, "size": 12, "line": {"color": "black", "width": 1}},
                text=[f"λ={r['lam']:g}" for r in means], textposition="top center",
                hovertext=[hover(r) for r in means], hoverinfo="text",
                error_x=_bars(means, metric), error_y=_bars(means, "gen_fid")), row=1, col=c)
            front = _front(means, metric)
            fig.add_trace(go.Scatter(
                x=[r[metric] for r in front], y=[r["gen_fid"] for r in front], mode="lines", legendgroup=method,
                showlegend=False, hoverinfo="skip", line={"color": colour, "dash": "dash", "width": 1.5}), row=1, col=c)
        if _ok(ref.get(metric)) and _ok(ref.get("gen_fid")):
            fig.add_trace(go.Scatter(
                x=[ref[metric]], y=[ref["gen_fid"]], mode="markers", name="pre-trained", legendgroup="ref",
                showlegend=first, marker={"color": "black", "symbol": "star", "size": 14},
                customdata=[[ref["run"]]], text=[hover({**ref, "method": "pre-trained"})],
                hovertemplate="%{text}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text=title, row=1, col=c)
    fig.update_yaxes(title_text="generator FID ↓", row=1, col=1)
    fig.update_layout(title=f"Sweep {results['sweep']['name']}: FID vs attack strength (means: 95 % bootstrap "
                            "interval over seeds; dashed: Pareto front)", height=520,
                      template="plotly_white", hovermode="closest", clickmode="event")
    return fig


def _bars(rows: list[dict], metric: str) -> dict:
    lo = [r[metric] - r[f"{metric}_lo"] if _ok(r.get(f"{metric}_lo")) else 0 for r in rows]
    hi = [r[f"{metric}_hi"] - r[metric] if _ok(r.get(f"{metric}_hi")) else 0 for r in rows]
    return {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "thickness": 1.2, "width": 3}


def write_png(results: dict, path: str | Path) -> Path:
    """The same plot as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = panels(results)
    fig, axes = plt.subplots(1, len(cols), figsize=(5.5 * len(cols), 4.8), sharey=True, squeeze=False)
    ref = results["reference"]
    for ax, (metric, title) in zip(axes[0], cols):
        for i, method in enumerate(_methods(results)):
            colour = COLOURS[i % len(COLOURS)]
            pts = [p for p in results["points"] if p["method"] == method and _ok(p.get(metric))]
            ax.scatter([p[metric] for p in pts], [p["gen_fid"] for p in pts], s=18, color=colour, alpha=0.45,
                       label=method)
            means = [r for r in results["means"] if r["method"] == method and _ok(r.get(metric))]
            if means:
                bx, by = _bars(means, metric), _bars(means, "gen_fid")
                ax.errorbar([r[metric] for r in means], [r["gen_fid"] for r in means],
                            xerr=[bx["arrayminus"], bx["array"]], yerr=[by["arrayminus"], by["array"]], fmt="o",
                            color=colour, markeredgecolor="black", markersize=7, capsize=3, linewidth=1)
                for r in means:
                    ax.annotate(f"λ={r['lam']:g}", (r[metric], r["gen_fid"]), textcoords="offset points",
                                xytext=(4, 5), fontsize=7, color=colour)
            front = _front(means, metric)
            ax.plot([r[metric] for r in front], [r["gen_fid"] for r in front], "--", color=colour, linewidth=1.2)
        if _ok(ref.get(metric)) and _ok(ref.get("gen_fid")):
            ax.scatter([ref[metric]], [ref["gen_fid"]], marker="*", s=160, color="black", label="pre-trained")
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("generator FID ↓")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Sweep {results['sweep']['name']}\nsmall: one seed; large: mean, 95 % bootstrap interval; "
                 "dashed: Pareto front", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic.write_bytes(Path(path), buffer.getvalue())
