"""The reproduction table of an experiment run: per pool, generator FID and the evaluation metrics.

Reads only the run folder (generators/<name>.json, pools/<pool>/report.json, transfer summaries), so
it works on a copied run without the models. The generator FID is computed at fixed latents against
public images with named features; the pool metrics come from the engine's evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from ddcs_core.errors import DDCSInputError
from ddcs_core.pool_names import PRETRAINED, generator_of
from ddcs_core.runs import Run

COLUMNS = (
    ("pool", "Pool"), ("generator", "Generator"), ("n", "Recon."), ("gen_fid", "Gen. FID ↓"), ("ddcs", "DDCS ↑"),
    ("ddcs_avg", "DDCS_avg ↑"), ("matched", "Matched ↑"), ("coverage", "Coverage ↑"), ("acc1", "Acc@1 ↑"),
    ("acc5", "Acc@5 ↑"), ("knn", "KNN dist ↓"), ("pool_fid", "Pool FID ↓"),
)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _victim(gen_info: dict | None) -> dict:
    """A generator's FID and the victim's entropy / confidence on its fixed-latent samples."""
    info = gen_info or {}
    return {"gen_fid": info.get("fid"), "victim_entropy": info.get("victim_entropy"),
            "victim_confidence": info.get("victim_confidence")}


def reproduction_table(run: Run) -> dict:
    """{'pools': one row per pool, 'transfer': one row per transfer mode, 'notes': features named}."""
    if not run.exists():
        raise DDCSInputError(f"--run {run.path}: not a run folder (no config.json)")
    rows, features, eval_profiles = [], set(), set()
    for pool in run.pools():
        gen = generator_of(pool)
        gen_info = _json(run.path / "generators" / f"{gen}.json") if "+" not in gen else None
        if gen_info:
            features.add(gen_info["features"])
        row = {"pool": pool, "generator": gen, "gen_fid": gen_info["fid"] if gen_info else None}
        if run.has_evaluation(pool):
            r = run.evaluation(pool).report
            acc = r.get("attack_accuracy") or {}
            row.update(n=r["counts"]["reconstructions"], ddcs=r["ddcs"], ddcs_avg=r["ddcs_avg"],
                       matched=r["matched_fraction"], coverage=r["prdc"].get("coverage"), acc1=acc.get("top1"),
                       acc5=acc.get("top5"), knn=r.get("knn_distance"), pool_fid=r["fid"]["value"])
            eval_profiles.add(f"{r['profile']['name']} ({r['profile']['net']}), pool FID/PRDC features: {r['fid']['features']}")
        rows.append(row)
    transfer = []
    for summary_path in sorted((run.path / "transfer").glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        gen_info = _json(run.path / "generators" / f"{s['mode']}.json")
        ngd = s.get("ngd") or {}
        lam = s.get("signature", {}).get("config", {}).get("lam") if s["mode"] != "vanilla" else None
        transfer.append({"mode": s["mode"], "lam": lam,
                         "steps": s["steps"], "sec_per_step": s["sec_per_step"],
                         "adv_first": s.get("adv_first"), "adv_last": s.get("adv_last"),
                         **_victim(gen_info), "projection": ngd.get("projection"), "grid": f"grids/{s['mode']}.png",
                         "method": ngd.get("method"), "diagnostics": ngd.get("diagnostics"),
                         "eigval_max": (ngd.get("basis") or {}).get("eigval_max")})
    pre = _json(run.path / "generators" / f"{PRETRAINED}.json")
    if pre:
        transfer.insert(0, {"mode": PRETRAINED, "lam": None, "steps": 0, "sec_per_step": None, "adv_first": None,
                            "adv_last": None, **_victim(pre), "projection": None, "grid": f"grids/{PRETRAINED}.png"})
    notes = [f"Gen. FID: generator samples at fixed latents vs public images, features {', '.join(sorted(features)) or '—'}",
             "Victim entropy (nats, uniform = log #classes) and mean top-1 confidence: the victim on the same "
             "fixed-latent samples; L_adv: the entropy loss summed over each transfer batch"]
    if any(t.get("diagnostics") for t in transfer):
        notes.append("NGD kept: ‖VVᵀg‖/‖g‖, the share of the victim's entropy gradient g inside the rank-k basis; gain: "
                     "⟨g, P̂g⟩/‖g‖², the first-order L_adv decrease of the applied step relative to the plain entropy "
                     "step at the same λ; λ_max: the basis's top eigenvalue (LPIPS units); means over the transfer steps")
    notes += [f"Evaluation profile: {p}" for p in sorted(eval_profiles)]
    return {"run": str(run.path), "pools": rows, "transfer": transfer, "notes": notes}


def _fmt(value, key: str) -> str:
    if value is None:
        return "—"
    if key in ("matched", "coverage", "acc1", "acc5"):
        return f"{100 * value:.1f} %"
    if key in ("ddcs", "ddcs_avg"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _diagnostics(t: dict) -> str:
    """An ngd transfer's mean kept fraction, first-order L_adv gain vs the entropy step, and λ_max."""
    d = t.get("diagnostics") or {}
    if d.get("kept") is None:
        return "—"
    top = t.get("eigval_max")
    return f"{100 * d['kept']:.1f} % · {d['gain']:.3g} · {'—' if top is None else f'{top:.3g}'}"


def to_markdown(table: dict) -> str:
    """The table as GitHub markdown (pools, then transfer modes, then notes)."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for row in table["pools"]:
        lines.append("| " + " | ".join(_fmt(row.get(k), k) for k, _ in COLUMNS) + " |")
    lines += ["", "| Transfer mode | Steps | s/step | L_adv first 50 → last 50 | Gen. FID ↓ | Victim entropy ↓ | "
              "Victim conf. ↑ | NGD kept ‖VVᵀg‖/‖g‖ · gain · λ_max | Grid |", "|---|---|---|---|---|---|---|---|---|"]
    for t in table["transfer"]:
        adv = "—" if t["adv_first"] is None else f"{t['adv_first']:.3f} → {t['adv_last']:.3f}"
        mode = t.get("method") or t["mode"] + (f" ({t['projection']})" if t["projection"] else "")
        lines.append(f"| {mode} | {t['steps']} | {_fmt(t['sec_per_step'], '')} | {adv} | {_fmt(t['gen_fid'], '')} | "
                     f"{_fmt(t.get('victim_entropy'), '')} | {_fmt(t.get('victim_confidence'), 'coverage')} | "
                     f"{_diagnostics(t)} | {t['grid']} |")
    lines += [""] + [f"- {n}" for n in table["notes"]]
    return "\n".join(lines) + "\n"


def transfer_comparison(tables: list[dict]) -> str:
    """The transfer rows of several runs' tables in one markdown table (e.g. a λ sweep, one run per λ),
    sorted by mode, projection and λ, so modes can be compared at equal victim entropy. The pre-trained
    generator is listed once, from the first run that has it."""
    rows = [(t, Path(table["run"]).name) for table in tables for t in table["transfer"]]
    first = next((i for i, (t, _) in enumerate(rows) if t["mode"] == PRETRAINED), None)
    rows = [r for i, r in enumerate(rows) if r[0]["mode"] != PRETRAINED or i == first]
    rows.sort(key=lambda r: (r[0]["mode"] != PRETRAINED, r[0]["mode"], r[0]["projection"] or "", r[0]["lam"] or 0, r[1]))
    lines = ["| Mode | λ | Steps | Gen. FID ↓ | Victim entropy ↓ | Victim conf. ↑ | Run |", "|---|---|---|---|---|---|---|"]
    for t, run in rows:
        mode = t["mode"] + (f" ({t['projection']})" if t["projection"] else "")
        lam = "—" if t["lam"] is None else f"{t['lam']:g}"
        lines.append(f"| {mode} | {lam} | {t['steps']} | "
                     f"{_fmt(t['gen_fid'], '')} | {_fmt(t.get('victim_entropy'), '')} | "
                     f"{_fmt(t.get('victim_confidence'), 'coverage')} | {run} |")
    return "\n".join(lines) + "\n"


def to_text(table: dict) -> str:
    """The pool table as aligned plain text for the terminal."""
    cells = [[title for _, title in COLUMNS]] + [[_fmt(r.get(k), k) for k, _ in COLUMNS] for r in table["pools"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"
