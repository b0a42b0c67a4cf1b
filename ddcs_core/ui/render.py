"""HTML fragments for the views, built from the records in rows.py (escaped; no gradio here).

Plain HTML keeps a 40-card gallery page to one string and one round trip, and lets every image be an
inline data URI made from the run's arrays.
"""

from __future__ import annotations

from html import escape

from ddcs_core.jobs import JobStatus
from ddcs_core.ui import fmt
from ddcs_core.ui.progress import JobLine, duration
from ddcs_core.ui.rows import Card, Closest, Detail, Difference, Exposure, Page, PoolHit, PoolMetrics, Stat


def notice(text: str, kind: str = "info") -> str:
    """A calm message box: kind is info, warn or error."""
    return f'<div class="ddcs-notice ddcs-{escape(kind)}">{escape(text)}</div>'


def summary(stats: list[Stat], profile: str) -> str:
    tiles = "".join(
        f'<div class="ddcs-stat"><div class="ddcs-stat-label">{escape(s.label)}</div>'
        f'<div class="ddcs-stat-value">{escape(s.value)}</div><div class="ddcs-stat-note">{escape(s.note)}</div></div>'
        for s in stats)
    return f'<div class="ddcs-summary">{tiles}</div><div class="ddcs-profile">{escape(profile)}</div>'


def _img(src: str, alt: str, cls: str = "") -> str:
    if not src:
        return f'<div class="ddcs-noimg {cls}" title="{escape(alt)}">not reached</div>'
    return f'<img class="{cls}" src="{src}" alt="{escape(alt)}" loading="lazy">'


def _closest_title(c: Closest) -> str:
    return (f"Unmatched: the nearest reconstruction of this class (d = {fmt.num(c.d, 3)} from this target) was "
            f"assigned to target #{c.assigned_rank}, which it is closer to (d = {fmt.num(c.assigned_d, 3)})")


def card(c: Card) -> str:
    status = "exact copy" if c.exact_copy else ("matched" if c.matched else "unmatched")
    state = "ddcs-copy" if c.exact_copy else ("ddcs-ok" if c.matched else "ddcs-miss")
    if c.closest is not None:
        recon = (f'<img class="ddcs-dim" src="{c.closest.src}" alt="nearest reconstruction of the class" '
                 f'title="{escape(_closest_title(c.closest))}" loading="lazy">')
        line, wrap = f"assigned to #{c.closest.assigned_rank}, d = {fmt.num(c.closest.d, 3)}", " ddcs-wrap"
    else:
        recon = _img(c.recon_src, f"nearest reconstruction of target {c.target}")
        line, wrap = f"{status} · d<sub>tar</sub> {fmt.num(c.d_tar, 3)}", ""
    return (
        f'<button class="ddcs-card {state}" data-idx="{c.target}" title="open target {c.target}">'
        f'<div class="ddcs-pair">{_img(c.target_src, f"target {c.target}")}{recon}</div>'
        f'<div class="ddcs-cap"><span class="ddcs-rank">#{c.rank}</span> <span class="ddcs-label">{escape(c.label)}</span></div>'
        f'<div class="ddcs-cap ddcs-small{wrap}"><span class="ddcs-dot"></span>{line}</div>'
        f'</button>')


def gallery(page: Page) -> str:
    if not page.cards:
        return notice("No targets match these filters.")
    first = page.page * page.per_page + 1
    of = f" (filtered from {fmt.count(page.n_total)})" if page.n_filtered != page.n_total else ""
    head = (f'<div class="ddcs-gallery-head">Targets {fmt.count(first)}–{fmt.count(first + len(page.cards) - 1)} of '
            f'{fmt.count(page.n_filtered)}{of}, hardest first · each card: the target, then its nearest '
            f'reconstruction · click a card for its detail</div>')
    return head + '<div class="ddcs-gallery">' + "".join(card(c) for c in page.cards) + "</div>"


def targets_only(page: Page) -> str:
    """The targets before any pool is evaluated: what the attack is after, while it runs."""
    if not page.cards:
        return notice("No targets match these filters.")
    first = page.page * page.per_page + 1
    head = (f'<div class="ddcs-gallery-head">Targets {fmt.count(first)}–{fmt.count(first + len(page.cards) - 1)} of '
            f'{fmt.count(page.n_filtered)}: the private training images the attack tries to reconstruct; their '
            f'reconstructions appear here when the first pool is evaluated</div>')
    cards = "".join(
        f'<div class="ddcs-card"><div class="ddcs-pair ddcs-single">{_img(c.target_src, f"target {c.target}")}</div>'
        f'<div class="ddcs-cap"><span class="ddcs-label">{escape(c.label)}</span></div></div>'
        for c in page.cards)
    return head + f'<div class="ddcs-gallery">{cards}</div>'


def precomputed(made: dict | None) -> str:
    """The label of a run that was shipped precomputed: which command made it, and when."""
    if not made:
        return ""
    when = str(made.get("finished", ""))[:10]
    took = made.get("attack_seconds")
    took = f", {round(float(took) / 60)} min of attack" if took else ""
    return (f'<div class="ddcs-precomputed"><b>Precomputed results</b>, shipped with the app: made by '
            f'<code>{escape(str(made.get("command", "?")))}</code> on {escape(when)}{escape(took)} '
            f'(ddcs-explorer {escape(str(made.get("ddcs_explorer", "?")))}). '
            'The Run view re-runs the attack live.</div>')


def status_line(line: JobLine | None) -> str:
    """One compact line about the job running on the selected run ('' when none runs)."""
    if line is None:
        return ""
    step = f" · step {line.step}/{line.steps} {escape(line.step_name)}" if line.step else ""
    left = duration(line.eta_s)
    return (f'<div class="ddcs-status" role="status"><span><b>{escape(line.kind)}</b> running{step} · '
            f'{line.percent} %</span><div class="ddcs-bar"><div style="width:{line.percent}%"></div></div>'
            f'<span class="ddcs-muted">{escape(left + " left") if left else "estimating the time left"}</span></div>')


def page_label(page: Page) -> str:
    return f"Page {page.page + 1} of {page.n_pages}"


def _recon_img(h: PoolHit, cls: str) -> str:
    """The assigned nearest reconstruction; for an unmatched target its class's nearest one, dimmed."""
    if h.closest is not None:
        return (f'<img class="{cls} ddcs-dim" src="{h.closest.src}" alt="nearest reconstruction of the class" '
                f'title="{escape(_closest_title(h.closest))}">')
    return _img(h.recon_src, f"nearest reconstruction in {h.pool}", cls)


def _recon_caption(h: PoolHit, pool: str) -> str:
    if h.closest is not None:
        return (f"Nearest of the class · {escape(pool)} · assigned to target #{h.closest.assigned_rank}, "
                f"d = {fmt.num(h.closest.d, 3)}")
    return f"Nearest reconstruction · {escape(pool)}"


def _hit_line(h: PoolHit, n_targets: int) -> str:
    if not h.evaluated:
        return "not evaluated"
    if not h.matched and h.closest is not None:
        return (f"unmatched · rank {h.rank} of {fmt.count(n_targets)}<br>"
                f"nearest: assigned to #{h.closest.assigned_rank}, d = {fmt.num(h.closest.d, 3)}")
    if not h.matched:
        return f"unmatched · rank {h.rank} of {fmt.count(n_targets)}"
    return (f"d<sub>tar</sub> {fmt.num(h.d_tar)} · rank {h.rank} of {fmt.count(n_targets)} · "
            f"{h.n_assigned} assigned")


def detail(d: Detail) -> str:
    h = d.hit
    status = "exact copy (d_tar = 0)" if d.exact_copy else ("matched" if h.matched else "unmatched: no reconstruction was assigned to it")
    facts = [
        ("Class", escape(d.label)),
        ("Target index", str(d.target)),
        ("Status", escape(status)),
        ("d<sub>tar</sub>", fmt.num(h.d_tar)),
        ("Contribution to DDCS", fmt.num(h.contribution)),
        ("Rank (hardest first)", f"{h.rank} of {fmt.count(d.n_targets)}"),
        ("Reconstructions assigned", str(h.n_assigned)),
        ("Source file", f'<code>{escape(d.path)}</code>'),
    ]
    if h.recon >= 0:
        facts.append(("Nearest reconstruction", f'#{h.recon} · <code>{escape(h.recon_path)}</code>'))
    if h.closest is not None:
        facts.append(("Nearest reconstruction of the class",
                      f"#{h.closest.recon}, d = {fmt.num(h.closest.d)} from this target; assigned to target "
                      f"#{h.closest.assigned_rank} (index {h.closest.assigned_to}), d = {fmt.num(h.closest.assigned_d)}"))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    main = (
        f'<div class="ddcs-detail"><figure class="ddcs-fig">{_img(d.target_src, f"target {d.target}", "ddcs-big")}'
        f'<figcaption>Target {d.target}</figcaption></figure>'
        f'<figure class="ddcs-fig">{_recon_img(h, "ddcs-big")}'
        f'<figcaption>{_recon_caption(h, d.pool)}</figcaption></figure>'
        f'<table class="ddcs-facts">{table}</table></div>')
    strip = "".join(
        f'<figure class="ddcs-fig ddcs-pool{" ddcs-current" if p.pool == d.pool else ""}">'
        f'{_recon_img(p, "ddcs-mid")}'
        f'<figcaption><b>{escape(p.pool)}</b><br>{_hit_line(p, d.n_targets)}</figcaption></figure>'
        for p in d.others)
    return (main + '<h3 class="ddcs-h3">Nearest reconstruction in every pool of the run</h3>'
            f'<div class="ddcs-strip">{strip}</div>')


_METRIC_COLUMNS = (
    ("DDCS", lambda r: fmt.num(r.ddcs)), ("DDCS avg", lambda r: fmt.num(r.ddcs_avg)),
    ("Matched", lambda r: fmt.pct(r.matched_fraction)), ("Coverage", lambda r: fmt.pct(r.coverage)),
    ("Precision", lambda r: fmt.pct(r.precision)), ("Recall", lambda r: fmt.pct(r.recall)),
    ("Density", lambda r: fmt.num(r.density, 3)), ("FID", lambda r: fmt.num(r.fid)),
    ("Acc@1", lambda r: fmt.pct(r.top1)), ("Acc@5", lambda r: fmt.pct(r.top5)),
    ("Reconstructions", lambda r: fmt.count(r.reconstructions or 0)),
)


def metrics_table(rows: list[PoolMetrics]) -> str:
    if not rows:
        return notice("This run has no pools yet.")
    head = "<tr><th>Pool</th>" + "".join(f"<th>{c}</th>" for c, _ in _METRIC_COLUMNS) + "</tr>"
    body = []
    for r in rows:
        if not r.evaluated:
            body.append(f'<tr><td>{escape(r.pool)}</td><td colspan="{len(_METRIC_COLUMNS)}" class="ddcs-muted">'
                        "not evaluated yet (Run view: job 'evaluate')</td></tr>")
            continue
        body.append(f"<tr><td>{escape(r.pool)}</td>" + "".join(f"<td>{f(r)}</td>" for _, f in _METRIC_COLUMNS) + "</tr>")
    features = sorted({r.fid_features for r in rows if r.evaluated and r.fid_features})
    foot = f'<div class="ddcs-muted">FID and precision/recall/density/coverage features: {escape(", ".join(features))}</div>' \
        if features else ""
    return f'<table class="ddcs-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>{foot}'


def strip(cards: list[Card], title: str, total: int) -> str:
    more = f" (showing {len(cards)})" if total > len(cards) else ""
    body = "".join(card(c) for c in cards) if cards else '<div class="ddcs-muted">none</div>'
    return f'<h3 class="ddcs-h3">{escape(title)}: {fmt.count(total)}{more}</h3><div class="ddcs-gallery">{body}</div>'


def difference_head(diff: Difference, a: str, b: str) -> str:
    return (f'<div class="ddcs-profile">Both reach {fmt.count(diff.both)} targets, neither reaches '
            f'{fmt.count(diff.neither)}; {escape(a)} alone reaches {fmt.count(len(diff.a_only))}, '
            f'{escape(b)} alone {fmt.count(len(diff.b_only))}.</div>')


def grids(items: list[tuple[str, str, str]]) -> str:
    """(name, data URI, error) per grid, side by side."""
    if not items:
        return notice("No fixed-latent grids in this run yet: the transfer step writes them to <run>/grids/ "
                      "(e.g. vanilla.png, entropy.png, ngd.png, same latents in each).")
    figs = "".join(
        f'<figure class="ddcs-fig ddcs-grid"><img src="{uri}" alt="{escape(name)} grid"><figcaption>{escape(name)}</figcaption></figure>'
        if uri else f'<figure class="ddcs-fig ddcs-grid">{notice(err, "warn")}<figcaption>{escape(name)}</figcaption></figure>'
        for name, uri, err in items)
    return f'<div class="ddcs-grids">{figs}</div>'


def exposure(rows: list[Exposure], thumbs: list[str], n_total: int) -> str:
    if not rows:
        return notice("No target was reached by any evaluated pool.")
    body = "".join(
        f'<tr data-idx="{r.target}" class="ddcs-click"><td>{r.rank}</td><td><img class="ddcs-tiny" src="{src}" alt="target {r.target}"></td>'
        f"<td>{escape(r.label)}</td><td>{'exact copy' if r.exact_copy else fmt.num(r.d_tar)}</td>"
        f"<td>{fmt.num(r.contribution)}</td><td>{escape(r.pool)}</td><td>{r.n_assigned}</td>"
        f"<td><code>{escape(r.path)}</code></td></tr>"
        for r, src in zip(rows, thumbs))
    head = ("<tr><th>Rank</th><th></th><th>Class</th><th>d<sub>tar</sub></th><th>Contribution</th><th>Closest pool</th>"
            "<th>Assigned</th><th>Training file</th></tr>")
    return (f'<div class="ddcs-profile">The {len(rows)} most exposed of {fmt.count(n_total)} training samples '
            f'(smallest LPIPS distance to a reconstruction first). Click a row for its detail.</div>'
            f'<table class="ddcs-table ddcs-exposure"><thead>{head}</thead><tbody>{body}</tbody></table>')


def job(status: JobStatus | None) -> str:
    if status is None:
        return notice("No job has run on this run yet.")
    pct = int(round(100 * status.progress))
    params = ", ".join(f"{k}={v}" for k, v in status.params.items())
    return (f'<div class="ddcs-job ddcs-job-{escape(status.state)}"><div class="ddcs-job-head">'
            f'<b>{escape(status.kind)}</b> <span class="ddcs-badge">{escape(status.state)}</span> '
            f'<span class="ddcs-muted">{escape(params)} · started {escape(status.started)}</span></div>'
            f'<div class="ddcs-bar"><div style="width:{pct}%"></div></div>'
            f'<div class="ddcs-job-msg">{pct} % · {escape(status.message)}</div></div>')
