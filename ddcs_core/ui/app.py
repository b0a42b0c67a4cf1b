"""The Gradio app: the shell, one builder per tab (ui/tabs/), and the handlers that change several views.

Handlers return dicts holding only the components that change. The Targets view is refreshed with
every run or pool change; the other tabs render when they are opened (and when a job finishes while
they are open), so switching runs stays fast on large runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, also on offline cluster nodes

import gradio as gr  # noqa: E402

from ddcs_core.jobs import job_kinds, load_job_modules  # noqa: E402
from ddcs_core.runs import Run  # noqa: E402
from ddcs_core.ui import render, rows  # noqa: E402
from ddcs_core.ui.session import Session, Status  # noqa: E402
from ddcs_core.ui.shell import FAST, Shell, View, build_shell, user_errors  # noqa: E402
from ddcs_core.ui.style import CSS, theme  # noqa: E402
from ddcs_core.ui.tabs.compare import CompareTab, build_compare  # noqa: E402
from ddcs_core.ui.tabs.defense import DefenseTab, build_defense  # noqa: E402
from ddcs_core.ui.tabs.detail import DetailTab, build_detail  # noqa: E402
from ddcs_core.ui.tabs.evaluate import EvaluateTab, build_evaluate  # noqa: E402
from ddcs_core.ui.tabs.map import MapTab, build_map  # noqa: E402
from ddcs_core.ui.tabs.run import RunTab, build_run  # noqa: E402
from ddcs_core.ui.tabs.targets import TargetsTab, build_targets  # noqa: E402
from ddcs_core.ui.tabs.tradeoff import build_tradeoff_tab  # noqa: E402
from ddcs_core.ui.views import UPLOADS, Explorer  # noqa: E402
from ddcs_core.uploads import UploadLimits  # noqa: E402


@dataclass(frozen=True)
class Views:
    """The tabs that show a run (Trade-off shows sweeps and keeps to itself)."""

    targets: TargetsTab
    detail: DetailTab
    map: MapTab
    compare: CompareTab
    run: RunTab
    defense: DefenseTab
    evaluate: EvaluateTab

    def lazy(self) -> dict[str, View]:
        """The tabs drawn when opened, by tab id (Targets is drawn with every run or pool change)."""
        return {"detail": self.detail, "map": self.map, "compare": self.compare, "run": self.run,
                "defense": self.defense}


def build_app(runs_dir: str | Path = "runs", device: str = "auto", explorer: Explorer | None = None) -> gr.Blocks:
    """The app over a run store; launch it with `launch(...)`."""
    ex = explorer or Explorer(runs_dir, device)
    load_job_modules()
    with gr.Blocks(title="DDCS Explorer", fill_width=True) as demo:
        shell = build_shell()
        with gr.Tabs(elem_id="ddcs-tabs") as tabs:
            v = Views(build_targets(ex, shell), build_detail(ex, shell), build_map(ex), build_compare(ex, shell),
                      build_run(ex, shell), build_defense(ex, shell), build_evaluate(ex))
            build_tradeoff_tab(ex.store.root)
        for view in (v.targets, v.detail, v.compare, v.run, v.defense):
            view.wire(shell)
        _wire_shared(demo, ex, shell, tabs, v)
    return demo


def _wire_shared(demo: gr.Blocks, ex: Explorer, shell: Shell, tabs: gr.Tabs, v: Views) -> None:
    """The events that change several views: the run and pool pickers, opening tabs and targets, the
    timer, and the buttons that start a job or create a run. Each event lists only what it can change."""
    inputs = shell.session.components
    lazy = v.lazy()
    every = list(dict.fromkeys([
        shell.run_dd, shell.pool_dd, shell.run_info, v.targets.class_dd, v.targets.status_rd, v.detail.target_st,
        shell.tab_st, tabs, *v.targets.outputs, *(c for view in lazy.values() for c in view.outputs),
        shell.opened_st, v.evaluate.msg, v.run.kind_dd]))

    def part_tab(s: Session) -> dict:
        return lazy[s.tab].part(s) if s.tab in lazy else {}

    def part_run(s: Session, keep_pool: bool) -> dict:
        """Header and Targets for the run, keeping the pool if asked and still there, and the open tab;
        on a new run (keep_pool False), the job its Run tab offers first."""
        pools = ex.pools(s.run) if s.run else []
        pool = s.pool if keep_pool and s.pool in pools else _preferred(pools)
        same = keep_pool and pool == s.pool
        s = replace(s, pool=pool, label=s.label if same else rows.ALL_CLASSES, status=s.status if same else "All",
                    page=s.page if same else 0, target=s.target if same else None)
        return {shell.pool_dd: gr.Dropdown(choices=pools, value=pool), shell.run_info: ex.run_line(s.run),
                v.targets.class_dd: gr.Dropdown(choices=ex.class_choices(s.run) if s.run else [rows.ALL_CLASSES],
                                                value=s.label),
                v.targets.status_rd: s.status, v.detail.target_st: s.target, **v.targets.part(s), **part_tab(s),
                **({} if keep_pool else {v.run.kind_dd: gr.Dropdown(choices=sorted(job_kinds()), value=ex.default_job(s.run))})}

    def listed(s: Session, keep_pool: bool) -> dict:
        """The run list read again, the session's run kept if it is still there."""
        names = ex.run_names()
        s = replace(s, run=s.run if s.run in names else (names[0] if names else None))
        return {shell.run_dd: gr.Dropdown(choices=names, value=s.run), **part_run(s, keep_pool), **v.run.part(s)}

    def created(run: Run, vals: tuple) -> dict:
        """A run just created from a button: picked, drawn, its job shown."""
        s = replace(Session.from_values(vals), run=run.name, tab="run")
        return {shell.run_dd: gr.Dropdown(choices=ex.run_names(), value=run.name), **part_run(s, keep_pool=False),
                **v.run.part(s)}

    @user_errors
    def on_load(*vals):
        return listed(Session.from_values(vals), keep_pool=False)

    @user_errors
    def on_reload(*vals):
        return listed(Session.from_values(vals), keep_pool=True)

    @user_errors
    def on_run(*vals):
        s = Session.from_values(vals)
        return {**part_run(s, keep_pool=False), **v.run.part(s)}

    @user_errors
    def on_pool(*vals):
        s = replace(Session.from_values(vals), label=rows.ALL_CLASSES, status="All", page=0)
        classes = ex.class_choices(s.run) if s.run else [rows.ALL_CLASSES]
        return {v.targets.class_dd: gr.Dropdown(choices=classes, value=rows.ALL_CLASSES), v.targets.status_rd: "All",
                **v.targets.part(s), **part_tab(s)}

    @user_errors(box=v.detail.detail)
    def on_open(evt: gr.EventData, *vals):
        s = replace(Session.from_values(vals), target=int(evt.idx), tab="detail")
        return {v.detail.target_st: s.target, shell.tab_st: "detail", tabs: gr.Tabs(selected="detail"),
                **v.detail.part(s)}

    def on_tab(name: str):
        @user_errors
        def go(*vals):
            s = replace(Session.from_values(vals), tab=name)
            return {shell.tab_st: name, **part_tab(s)}
        return go

    @user_errors
    def on_map_job(*vals):
        s = replace(Session.from_values(vals), tab="run")
        ex.start_job(s.run, "map", {"method": "umap", "device": ex.device, "force": False})
        return {tabs: gr.Tabs(selected="run"), shell.tab_st: "run", **v.run.part(s)}

    @user_errors
    def on_tick(*vals):
        *session_vals, seen, opened = vals
        s = Session.from_values(session_vals)
        st = ex.job_status(s.run)
        now = Status.of(s.run, st, ex.landed(s.run))
        if now == seen:
            return gr.skip()
        out = v.run.part(s)
        if now.landed_since(seen):  # a pool (or the map) landed: every view shows it
            out.update(part_run(s, keep_pool=True))
        if now.finished_since(seen):
            out.update(part_run(s, keep_pool=True))
            if st.id == opened and st.state == "done":
                out.update({tabs: gr.Tabs(selected="targets"), shell.tab_st: "targets", shell.opened_st: ""})
        return out

    @user_errors(box=v.run.rerun_msg)
    def on_rerun(*vals):
        run = ex.rerun_demo()
        return {**created(run, vals), v.run.rerun_msg: render.notice(
            f"Run {run.name} created in {ex.store.root}; attacking it now, live.")}

    @user_errors(box=v.evaluate.msg)
    def on_evaluate(*vals):
        form = v.evaluate.form
        run = ex.import_folders(**dict(zip(form, vals)))
        st = ex.job_status(run.name)
        return {**created(run, vals[len(form):]), tabs: gr.Tabs(selected="run"), shell.tab_st: "run",
                shell.opened_st: st.id if st else "",
                v.evaluate.msg: render.notice(f"Run {run.name} created in {ex.store.root}; evaluating it now.")}

    @user_errors(box=v.run.attack_msg)
    def on_attack(*vals):
        form = v.run.attack_form
        settings = dict(zip(form, vals))
        name, device = settings.pop("name"), settings.pop("device")
        run = ex.new_attack_run(name, settings, device)
        return {**created(run, vals[len(form):]),
                v.run.attack_msg: render.notice(f"Run {run.name} created in {ex.store.root}; attacking now.")}

    detail_out = [v.detail.target_st, shell.tab_st, tabs, v.detail.detail]
    demo.load(on_load, inputs, every)
    shell.run_dd.input(on_run, inputs, every)
    shell.reload_b.click(on_reload, inputs, every)
    shell.pool_dd.input(on_pool, inputs, every)
    for source in (v.targets.gallery, v.compare.diff, v.defense.ranking, v.map.side):
        source.select(on_open, inputs, detail_out, **FAST)
    v.targets.tab.select(on_tab("targets"), inputs, [shell.tab_st])
    for name, view in lazy.items():
        view.tab.select(on_tab(name), inputs, [shell.tab_st, *view.outputs])
    v.map.compute_b.click(on_map_job, inputs, [tabs, shell.tab_st, *v.run.outputs])
    shell.timer.tick(on_tick, [*inputs, shell.seen_st, shell.opened_st], every, show_progress="hidden")
    v.run.rerun_b.click(on_rerun, inputs, [*every, v.run.rerun_msg])
    v.evaluate.evaluate_b.click(on_evaluate, [*v.evaluate.form.values(), *inputs], every)
    v.run.attack_b.click(on_attack, [*v.run.attack_form.values(), *inputs], [*every, v.run.attack_msg])


def _preferred(pools: list[str]) -> str | None:
    """The pool shown first: the dual pool (the paper's D_rec) when there is one, else the first."""
    return next((p for p in pools if "dual" in p.lower()), pools[0] if pools else None)


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
