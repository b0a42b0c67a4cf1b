"""The Gradio layer: layout and event wiring over `views.Explorer`; nothing is computed here.

Handlers return dicts holding only the components that change. The Targets view is refreshed with
every run or pool change; the other tabs render when they are opened (and when a job finishes while
they are open), so switching runs stays fast on large runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, also on offline cluster nodes

import gradio as gr  # noqa: E402

from ddcs_core.errors import DDCSInputError  # noqa: E402
from ddcs_core.experiment import AttackSettings  # noqa: E402
from ddcs_core.shipped_run import ATTACK_COMMAND as DEMO_COMMAND  # noqa: E402
from ddcs_core.jobs import JobStatus, devices, job_kinds, load_job_modules  # noqa: E402
from ddcs_core.ui import render, rows  # noqa: E402
from ddcs_core.ui.scripts import MAP_PREVIEW, OPEN_ON_CLICK  # noqa: E402
from ddcs_core.ui.style import CSS, theme  # noqa: E402
from ddcs_core.ui.tradeoff_view import build_tradeoff_tab  # noqa: E402
from ddcs_core.ui.views import DEFENSE_SHOWN, UPLOADS, Explorer  # noqa: E402
from ddcs_core.uploads import UploadLimits  # noqa: E402

PREVIEW_EMPTY = '<div class="ddcs-preview"><div class="ddcs-preview-cap">Hover a point to see its image.<br>Click a point to open its target.</div></div>'
ATTACK = AttackSettings()
INTRO = ("<h1>DDCS Explorer</h1><p>Sample-level evaluation of model inversion attacks: which private training "
         "samples an attack reconstructed, how closely, and which it missed.</p>")


def user_errors(fn: Callable | None = None, *, box: gr.HTML | None = None) -> Callable:
    """Show a bad input's message as a warning (and in `box`, if given), never a traceback; nothing else changes."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DDCSInputError as exc:
                gr.Warning(escape(str(exc)))
                return {box: render.notice(str(exc), "error")} if box is not None else gr.skip()
        return wrapper
    return decorate(fn) if fn is not None else decorate


class Ctx(NamedTuple):
    """The session's selections, passed to every handler that redraws views."""

    run: str | None
    pool: str | None
    label: str
    status: str
    page: int
    target: int | None
    tab: str
    pool_a: str | None
    pool_b: str | None
    defense_pool: str | None
    defense_n: int


def build_app(runs_dir: str | Path = "runs", device: str = "auto", explorer: Explorer | None = None) -> gr.Blocks:
    """The app over a run store; launch it with `launch(...)`."""
    ex = explorer or Explorer(runs_dir, device)
    load_job_modules()

    def thumb(payload):
        return ex.thumb(payload)

    with gr.Blocks(title="DDCS Explorer", fill_width=True) as demo:
        page_st, target_st, tab_st = gr.State(0), gr.State(None), gr.State("targets")
        seen_st, open_st = gr.State(""), gr.State("")
        timer = gr.Timer(1.0)  # job status, outside the tabs so it ticks whichever tab is open
        gr.HTML(INTRO, elem_id="ddcs-title")
        with gr.Row():
            run_dd = gr.Dropdown(label="Run", choices=[], scale=3, elem_id="ddcs-run")
            pool_dd = gr.Dropdown(label="Pool (reconstructions)", choices=[], scale=3, elem_id="ddcs-pool")
        with gr.Row():
            run_info = gr.HTML(scale=5)
            reload_b = gr.Button("Reload runs", size="sm", scale=0, min_width=110)
        status_html = gr.HTML(elem_id="ddcs-status-line")  # the running job, whichever tab is open
        with gr.Tabs(elem_id="ddcs-tabs") as tabs:
            with gr.Tab("Targets", id="targets") as tab_targets:
                summary = gr.HTML(elem_id="ddcs-summary")
                with gr.Row():
                    class_dd = gr.Dropdown(label="Class", choices=[rows.ALL_CLASSES], value=rows.ALL_CLASSES, scale=2)
                    status_rd = gr.Radio(list(rows.STATUSES), value="All", label="Targets", scale=2)
                gallery = gr.HTML(js_on_load=OPEN_ON_CLICK, elem_id="ddcs-gallery")
                with gr.Row(elem_id="ddcs-pager"):
                    prev_b = gr.Button("← Previous", size="sm", scale=0, min_width=120)
                    page_md = gr.Markdown(elem_id="ddcs-page-label")
                    next_b = gr.Button("Next →", size="sm", scale=0, min_width=120)
            with gr.Tab("Target detail", id="detail") as tab_detail:
                with gr.Row():
                    harder_b = gr.Button("← Harder target", size="sm", scale=0, min_width=150)
                    easier_b = gr.Button("Easier target →", size="sm", scale=0, min_width=150)
                detail = gr.HTML(elem_id="ddcs-detail")
            with gr.Tab("Map", id="map") as tab_map:
                map_note = gr.HTML()
                with gr.Row():
                    map_plot = gr.Plot(elem_id="ddcs-map", show_label=False, scale=4)
                    map_side = gr.HTML(PREVIEW_EMPTY, js_on_load=MAP_PREVIEW, server_functions=[thumb],
                                       elem_id="ddcs-preview", scale=1, min_width=220)
                map_b = gr.Button("Compute or update the map", size="sm", scale=0)
            with gr.Tab("Compare", id="compare") as tab_compare:
                gr.Markdown("### Pools side by side\nThe same fixed latents from each generator, then every pool's metrics.")
                grids = gr.HTML()
                metrics = gr.HTML()
                with gr.Row():
                    pool_a = gr.Dropdown(label="Pool A", choices=[])
                    pool_b = gr.Dropdown(label="Pool B", choices=[])
                diff = gr.HTML(js_on_load=OPEN_ON_CLICK)
            with gr.Tab("Run", id="run") as tab_run:
                with gr.Row(equal_height=True):
                    rerun_b = gr.Button("Re-run the demo attack", size="sm", scale=0, min_width=220,
                                        elem_id="ddcs-rerun-demo")
                    gr.Markdown("Attacks live as `" + DEMO_COMMAND + "` does, into a new run `demo-live-…`; its "
                                "pools appear as they finish. The precomputed demo run stays, to compare with.")
                rerun_msg = gr.HTML()
                gr.Markdown("### Start a job on the selected run\nOne job at a time per run; browsing stays available meanwhile.")
                kinds = sorted(job_kinds())
                with gr.Row(equal_height=True):
                    kind_dd = gr.Dropdown(label="Job", choices=kinds, value=ex.default_job(None),
                                          scale=1)
                    kind_md = gr.Markdown(Explorer.kind_help(kind_dd.value), elem_id="ddcs-kind-help")

                @gr.render(inputs=[kind_dd, run_dd])
                def job_form(kind: str, run: str | None):
                    spec = job_kinds().get(kind)
                    if spec is None:
                        gr.Markdown("No job kinds are registered.")
                        return
                    target_run = ex.store.run(run) if run else None
                    with gr.Row():
                        inputs = [_param_input(p, target_run, ex.device) for p in spec.params]
                    with gr.Row():
                        start_b = gr.Button(f"Start {kind}", variant="primary", scale=0, min_width=200)
                        cancel_b = gr.Button("Cancel job", variant="stop", scale=0, min_width=160)

                    @user_errors
                    def start(*vals):
                        values, c = vals[:len(inputs)], Ctx(*vals[len(inputs):])
                        ex.start_job(c.run, kind, {p.name: v for p, v in zip(spec.params, values)})
                        return part_job(c)

                    start_b.click(start, [*inputs, *ctx_in], [job_html, job_log, seen_st, status_html])
                    cancel_b.click(on_cancel, ctx_in, [job_html, job_log, seen_st, status_html])

                job_html = gr.HTML()
                job_log = gr.Textbox(label="Log", lines=10, max_lines=10, interactive=False, autoscroll=True)
                with gr.Accordion("New attack run on the demo world", open=False, elem_id="ddcs-new-attack"):
                    gr.Markdown("Transfer learning in the chosen modes, inversion with every generator, dual pools "
                                "and their evaluation, as `assets/configs/demo.yaml` with these settings. It becomes "
                                "a new run; its progress shows above.")
                    with gr.Row():
                        at_name = gr.Textbox(label="Run name (optional)", placeholder="attack-ngd-k10")
                        at_modes = gr.CheckboxGroup(list(ATTACK.modes), value=list(ATTACK.modes), label="Transfer modes")
                        at_proj = gr.Radio(["reference", "damped"], value=ATTACK.projection, label="NGD projection",
                                           info="reference: basis at fixed latents (paper) · damped: refreshed, keeps the complement")
                    with gr.Row():
                        at_steps = gr.Number(ATTACK.steps, label="Transfer steps", precision=0, minimum=1)
                        at_lam = gr.Number(ATTACK.lam, label="λ (entropy weight)", minimum=0)
                        at_k = gr.Number(ATTACK.k, label="k (eigenpairs)", precision=0, minimum=1)
                        at_mu = gr.Number(ATTACK.mu, label="μ (damping)", minimum=0)
                        at_n = gr.Number(ATTACK.final_per_class, label="Samples per class", precision=0, minimum=1)
                        at_classes = gr.Number(ATTACK.classes, label="Classes (0: all)", precision=0, minimum=0)
                        at_seed = gr.Number(ATTACK.seed, label="Seed", precision=0)
                        at_device = gr.Dropdown(devices(), value=ex.device if ex.device in devices() else "auto",
                                                label="Device")
                    at_b = gr.Button("Create the run and start the attack", variant="primary", scale=0, min_width=320)
                    at_msg = gr.HTML()
            with gr.Tab("Defense", id="defense") as tab_defense:
                gr.Markdown("### Most exposed training samples\nRanked by how closely an attack reconstructed them "
                            "(smallest d_tar first): the samples a data owner should worry about.")
                with gr.Row():
                    def_pool = gr.Dropdown(label="Exposure to", choices=[rows.ALL_POOLS], value=rows.ALL_POOLS, scale=2)
                    def_n = gr.Slider(10, 500, value=DEFENSE_SHOWN, step=10, label="Show the top", scale=2)
                    def_dl = gr.DownloadButton("Download the full ranking (CSV)", value=None, scale=1, size="md")
                def_html = gr.HTML(js_on_load=OPEN_ON_CLICK)
            with gr.Tab("Evaluate", id="evaluate"):
                gr.Markdown("### Evaluate any attack's output\nUpload two .zip files (one folder per class, class "
                            "names matching) or .npz files, or name folders or .npz files on this server under its "
                            f"data roots ({escape(ex.roots.describe())}). A new run is created and evaluated; its "
                            "progress shows in the Run tab and the Targets view opens when it is done.")
                with gr.Row():
                    ev_targets_up = gr.File(label="Targets (private training set): .zip or .npz",
                                            file_types=[".zip", ".npz"], type="filepath")
                    ev_recon_up = gr.File(label="Reconstructions: .zip or .npz", file_types=[".zip", ".npz"],
                                          type="filepath")
                with gr.Row():
                    ev_targets = gr.Textbox(label="…or a targets folder on the server", placeholder="lfw-private")
                    ev_recon = gr.Textbox(label="…or a reconstructions folder on the server",
                                          placeholder="attack-output")
                with gr.Row():
                    ev_name = gr.Textbox(label="New run name (optional)", placeholder="eval-myattack")
                    ev_profile = gr.Radio(["fast", "paper", "official"], value="fast", label="Profile",
                                          info="fast: LPIPS-alex at native size · paper: LPIPS-VGG at 256×256 · official: the official code's preparation")
                    ev_device = gr.Dropdown(["auto", "cpu", "cuda"], value=ex.device if ex.device in ("auto", "cpu", "cuda") else "auto",
                                            label="Device")
                with gr.Row():
                    ev_b = gr.Button("Create the run and evaluate", variant="primary", scale=0, min_width=320)
                ev_msg = gr.HTML()
            build_tradeoff_tab(ex.store.root)

        ctx_in = [run_dd, pool_dd, class_dd, status_rd, page_st, target_st, tab_st, pool_a, pool_b, def_pool, def_n]
        every = [run_dd, pool_dd, run_info, class_dd, status_rd, page_st, target_st, tab_st, tabs, summary, gallery,
                 page_md, detail, map_plot, map_note, pool_a, pool_b, grids, metrics, diff, job_html, job_log,
                 seen_st, def_pool, def_html, def_dl, open_st, ev_msg, kind_dd, status_html]

        # parts: each returns the updates of one view ----------------------------------------------------
        def part_targets(c: Ctx, page: int | None = None) -> dict:
            s, g, label, shown = ex.targets_view(c.run, c.pool, c.label, c.status, c.page if page is None else page)
            return {summary: s, gallery: g, page_md: label, page_st: shown}

        def part_detail(c: Ctx) -> dict:
            return {detail: ex.detail_view(c.run, c.pool, c.target)}

        def part_map(c: Ctx) -> dict:
            fig, note = ex.map_view(c.run, c.pool)
            return {map_plot: fig, map_note: note}

        def part_compare(c: Ctx) -> dict:
            pools, da, db = ex.compare_pairs(c.run)
            a = c.pool_a if c.pool_a in pools else da
            b = c.pool_b if c.pool_b in pools else db
            g, m, d = ex.compare_view(c.run, a, b)
            return {pool_a: gr.Dropdown(choices=pools, value=a), pool_b: gr.Dropdown(choices=pools, value=b),
                    grids: g, metrics: m, diff: d}

        def part_job(c: Ctx) -> dict:
            st = ex.job_status(c.run)
            return {job_html: render.job(st), job_log: "\n".join(st.log) if st else "",
                    seen_st: _token(c.run, st, ex.landed(c.run)), status_html: ex.status_line(c.run)}

        def part_defense(c: Ctx) -> dict:
            choices = [rows.ALL_POOLS, *ex.pools(c.run)]
            chosen = c.defense_pool if c.defense_pool in choices else rows.ALL_POOLS
            html, path = ex.defense_view(c.run, chosen, c.defense_n)
            return {def_pool: gr.Dropdown(choices=choices, value=chosen), def_html: html,
                    def_dl: gr.DownloadButton(value=path, interactive=path is not None)}

        parts = {"targets": part_targets, "detail": part_detail, "map": part_map, "compare": part_compare,
                 "run": part_job, "defense": part_defense}

        def part_tab(c: Ctx) -> dict:
            return parts[c.tab](c) if c.tab in parts and c.tab != "targets" else {}

        def part_run(c: Ctx, keep_pool: bool) -> dict:
            """Header and Targets for the run, keeping the pool if asked and still there, and the open tab;
            on a new run (keep_pool False), the job its Run tab offers first."""
            pools = ex.pools(c.run) if c.run else []
            pool = c.pool if keep_pool and c.pool in pools else _preferred(pools)
            same = keep_pool and pool == c.pool
            c = c._replace(pool=pool, label=c.label if same else rows.ALL_CLASSES, status=c.status if same else "All",
                           page=c.page if same else 0, target=c.target if same else None)
            return {pool_dd: gr.Dropdown(choices=pools, value=pool), run_info: ex.run_line(c.run),
                    class_dd: gr.Dropdown(choices=ex.class_choices(c.run) if c.run else [rows.ALL_CLASSES], value=c.label),
                    status_rd: c.status, target_st: c.target, **part_targets(c), **part_tab(c),
                    **({} if keep_pool else {kind_dd: gr.Dropdown(value=ex.default_job(c.run))})}

        # handlers --------------------------------------------------------------------------------------
        @user_errors
        def on_load(*vals):
            c = Ctx(*vals)
            names = ex.run_names()
            run = c.run if c.run in names else (names[0] if names else None)
            c = c._replace(run=run)
            return {run_dd: gr.Dropdown(choices=names, value=run), **part_run(c, keep_pool=False), **part_job(c)}

        @user_errors
        def on_run(*vals):
            c = Ctx(*vals)
            return {**part_run(c, keep_pool=False), **part_job(c)}

        @user_errors
        def on_reload(*vals):
            c = Ctx(*vals)
            names = ex.run_names()
            c = c._replace(run=c.run if c.run in names else (names[0] if names else None))
            return {run_dd: gr.Dropdown(choices=names, value=c.run), **part_run(c, keep_pool=True), **part_job(c)}

        @user_errors
        def on_pool(*vals):
            c = Ctx(*vals)._replace(label=rows.ALL_CLASSES, status="All", page=0)
            return {class_dd: gr.Dropdown(value=rows.ALL_CLASSES), status_rd: "All", **part_targets(c),
                    **(part_tab(c) if c.tab != "detail" else part_detail(c))}

        @user_errors(box=gallery)
        def on_filter(*vals):
            return part_targets(Ctx(*vals), page=0)

        def on_page(step: int):
            @user_errors(box=gallery)
            def go(*vals):
                c = Ctx(*vals)
                return part_targets(c, page=c.page + step)
            return go

        @user_errors(box=detail)
        def on_open(evt: gr.EventData, *vals):
            c = Ctx(*vals)._replace(target=int(evt.idx), tab="detail")
            return {target_st: c.target, tab_st: "detail", tabs: gr.Tabs(selected="detail"), **part_detail(c)}

        def on_step(step: int):
            @user_errors(box=detail)
            def go(*vals):
                c = Ctx(*vals)
                c = c._replace(target=ex.neighbour(c.run, c.pool, c.target, step))
                return {target_st: c.target, **part_detail(c)}
            return go

        def on_tab(name: str):
            @user_errors
            def go(*vals):
                c = Ctx(*vals)._replace(tab=name)
                return {tab_st: name, **(parts[name](c) if name != "targets" else {})}
            return go

        @user_errors
        def on_compare(*vals):
            return part_compare(Ctx(*vals))

        @user_errors
        def on_defense(*vals):
            return part_defense(Ctx(*vals))

        @user_errors
        def on_cancel(*vals):
            c = Ctx(*vals)
            if not ex.cancel_job(c.run):
                gr.Info("No job is running on this run.")
            return part_job(c)

        @user_errors
        def on_map_job(*vals):
            c = Ctx(*vals)
            ex.start_job(c.run, "map", {"method": "umap", "device": ex.device, "force": False})
            return {tabs: gr.Tabs(selected="run"), tab_st: "run", **part_job(c._replace(tab="run"))}

        @user_errors
        def on_tick(*vals):
            *ctx_vals, seen, opened = vals
            c = Ctx(*ctx_vals)
            st = ex.job_status(c.run)
            landed = ex.landed(c.run)
            token = _token(c.run, st, landed)
            if token == seen:
                return gr.skip()
            out = part_job(c)
            was = seen.split("|")
            same_run = was[0] == (c.run or "")
            if same_run and was[-1] != landed:  # a pool (or the map) landed: every view shows it
                out.update(part_run(c, keep_pool=True))
            if st is not None and not st.active and len(was) > 2 and same_run and was[1] == st.id \
                    and was[2] in ("queued", "running"):
                out.update(part_run(c, keep_pool=True))
                if st.id == opened and st.state == "done":
                    c = c._replace(tab="targets")
                    out.update({tabs: gr.Tabs(selected="targets"), tab_st: "targets", open_st: ""})
            return out

        @user_errors(box=rerun_msg)
        def on_rerun(*vals):
            run = ex.rerun_demo()
            c = Ctx(*vals)._replace(run=run.name, tab="run")
            return {run_dd: gr.Dropdown(choices=ex.run_names(), value=run.name), **part_run(c, keep_pool=False),
                    **part_job(c), rerun_msg: render.notice(f"Run {run.name} created in {ex.store.root}; "
                                                            "attacking it now, live.")}

        @user_errors(box=ev_msg)
        def on_evaluate(targets_path, recon_path, targets_up, recon_up, name, profile, device, *vals):
            run = ex.import_folders(targets_path, recon_path, name, profile, device, targets_upload=targets_up,
                                    recon_upload=recon_up)
            c = Ctx(*vals)._replace(run=run.name, tab="run")
            st = ex.job_status(run.name)
            return {run_dd: gr.Dropdown(choices=ex.run_names(), value=run.name), tabs: gr.Tabs(selected="run"),
                    tab_st: "run", open_st: st.id if st else "", **part_run(c, keep_pool=False), **part_job(c),
                    ev_msg: render.notice(f"Run {run.name} created in {ex.store.root}; evaluating it now.")}

        @user_errors(box=at_msg)
        def on_attack(name, modes, projection, steps, lam, k, mu, per_class, classes, seed, device, *vals):
            settings = {"modes": modes, "projection": projection, "steps": steps, "lam": lam, "k": k, "mu": mu,
                        "final_per_class": per_class, "classes": classes, "seed": seed}
            run = ex.new_attack_run(name, settings, device)
            c = Ctx(*vals)._replace(run=run.name, tab="run")
            return {run_dd: gr.Dropdown(choices=ex.run_names(), value=run.name), **part_run(c, keep_pool=False),
                    **part_job(c), at_msg: render.notice(f"Run {run.name} created in {ex.store.root}; attacking now.")}

        # wiring: each event lists only what it can change; quick browsing events skip the queue (their
        # errors show in the view's own box, since warnings need the queue) ------------------------------
        targets_out = [summary, gallery, page_md, page_st]
        detail_out = [target_st, tab_st, tabs, detail]
        tab_out = {"targets": [], "detail": [detail], "map": [map_plot, map_note],
                   "compare": [pool_a, pool_b, grids, metrics, diff], "run": [job_html, job_log, seen_st, status_html],
                   "defense": [def_pool, def_html, def_dl]}
        job_out = [tabs, tab_st, job_html, job_log, seen_st, status_html]
        fast = {"queue": False, "show_progress": "hidden"}
        demo.load(on_load, ctx_in, every)
        run_dd.input(on_run, ctx_in, every)
        reload_b.click(on_reload, ctx_in, every)
        pool_dd.input(on_pool, ctx_in, every)
        class_dd.input(on_filter, ctx_in, targets_out, **fast)
        status_rd.input(on_filter, ctx_in, targets_out, **fast)
        prev_b.click(on_page(-1), ctx_in, targets_out, **fast)
        next_b.click(on_page(+1), ctx_in, targets_out, **fast)
        for source in (gallery, diff, def_html, map_side):
            source.select(on_open, ctx_in, detail_out, **fast)
        harder_b.click(on_step(-1), ctx_in, detail_out, **fast)
        easier_b.click(on_step(+1), ctx_in, detail_out, **fast)
        for tab, name in ((tab_targets, "targets"), (tab_detail, "detail"), (tab_map, "map"),
                          (tab_compare, "compare"), (tab_run, "run"), (tab_defense, "defense")):
            tab.select(on_tab(name), ctx_in, [tab_st, *tab_out[name]])
        pool_a.input(on_compare, ctx_in, tab_out["compare"])
        pool_b.input(on_compare, ctx_in, tab_out["compare"])
        def_pool.input(on_defense, ctx_in, tab_out["defense"])
        def_n.release(on_defense, ctx_in, tab_out["defense"])
        map_b.click(on_map_job, ctx_in, job_out)
        timer.tick(on_tick, [*ctx_in, seen_st, open_st], every, show_progress="hidden")
        rerun_b.click(on_rerun, ctx_in, [*every, rerun_msg])
        ev_b.click(on_evaluate, [ev_targets, ev_recon, ev_targets_up, ev_recon_up, ev_name, ev_profile, ev_device,
                                 *ctx_in], every)
        at_b.click(on_attack, [at_name, at_modes, at_proj, at_steps, at_lam, at_k, at_mu, at_n, at_classes, at_seed,
                               at_device, *ctx_in], [*every, at_msg])
        kind_dd.change(Explorer.kind_help, kind_dd, kind_md)

    return demo


def _param_input(p, run, device: str):
    """An input component for one job parameter spec."""
    info = p.help or None
    if p.type == "choice":
        options = p.options(run)
        default = device if p.name == "device" and device in options else p.default
        value = default if default in options else (options[0] if options else None)
        return gr.Dropdown(options, value=value, label=p.label, info=info)
    if p.type == "bool":
        return gr.Checkbox(value=bool(p.default), label=p.label, info=info)
    if p.type in ("int", "float"):
        return gr.Number(value=p.default, label=p.label, info=info, precision=0 if p.type == "int" else None,
                         minimum=p.minimum, maximum=p.maximum)
    return gr.Textbox(value=p.default or "", label=p.label, info=info)


def _preferred(pools: list[str]) -> str | None:
    """The pool shown first: the dual pool (the paper's D_rec) when there is one, else the first."""
    return next((p for p in pools if "dual" in p.lower()), pools[0] if pools else None)


def _token(run: str | None, st: JobStatus | None, landed: str = "") -> str:
    """What the timer compares: the job's state and progress, and (last) the stamp of the run's files."""
    if st is None:
        return f"{run or ''}|none|{landed}"
    return f"{run or ''}|{st.id}|{st.state}|{st.progress:.3f}|{len(st.log)}|{landed}"


def launch(demo: gr.Blocks, runs_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           auth: tuple[str, str] | None = None, prevent_thread_lock: bool = False, quiet: bool = False,
           max_upload_bytes: int = UploadLimits().max_total_bytes):
    """Serve the app. Files are served from the run store only (symlinks out of it are refused, as gradio
    resolves paths before its check), never from its .uploads; besides, gradio serves the files it
    received (uploads) or sent (downloads) from its own cache folder."""
    root = Path(runs_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, allowed_paths=[str(root)],
                       blocked_paths=[str(root / UPLOADS)], max_file_size=max_upload_bytes,
                       theme=theme(), css=CSS, show_error=False, prevent_thread_lock=prevent_thread_lock,
                       quiet=quiet, run_history=False, footer_links=["api", "gradio", "settings"])
