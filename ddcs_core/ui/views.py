"""The views' contents for a given run and pool: HTML strings, figures and file paths, no gradio.

`Explorer` owns the run store, the cache of loaded runs and the job runner, and answers each view
with what it shows. The Gradio layer (app.py) only wires these answers to components; errors in
input arrive here as DDCSInputError and leave as messages for the user.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from html import escape
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ddcs_core import shipped_run
from ddcs_core.data.images import load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.jobs import JobRunner, JobStatus, job_kinds
from ddcs_core.runs import Run, RunStore, check_name
from ddcs_core.ui import progress, render, rows
from ddcs_core.ui.map_data import figure, map_data
from ddcs_core.ui.rundata import RunCache, RunData
from ddcs_core.ui.thumbs import grid_data_uri

if TYPE_CHECKING:
    import plotly.graph_objects as go

PER_PAGE = 40
DIFF_SHOWN = 24
DEFENSE_SHOWN = 30
log = logging.getLogger(__name__)


class Explorer:
    """Everything the app shows, computed from one run store."""

    def __init__(self, runs_dir: str | Path, device: str = "auto", runner: JobRunner | None = None) -> None:
        self.store = RunStore(runs_dir)
        self.cache = RunCache(self.store)
        self.runner = runner or JobRunner()
        self.device = device
        self.shipped_demo: Path | None = shipped_run.SHIPPED_RUN  # None: the demo run is always attacked live
        self._reference: dict[str, float] | None = None

    # runs and pools -----------------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        return self.cache.names()

    def data(self, run: str) -> RunData:
        if not run:
            raise DDCSInputError(f"no run selected; the store {self.store.root} holds none yet (create one in Evaluate)")
        return self.cache.get(run)

    def pools(self, run: str | None) -> list[str]:
        """Evaluated pools of the run, the ones the Targets view can show."""
        return self.data(run).evaluated if run else []

    def run_line(self, run: str | None) -> str:
        if not run:
            return render.notice(f"No runs in {self.store.root} yet. Create one from two image folders in the "
                                 "Evaluate tab, or start the app with --runs pointing at a run store.")
        d = self.data(run)
        waiting = [p for p in d.pools if p not in d.evaluated]
        extra = f" · not evaluated yet: {', '.join(waiting)}" if waiting else ""
        return (f'<div class="ddcs-profile">Run <b>{escape(run)}</b> · {len(d.targets):,} targets · '
                f'pools: {escape(", ".join(d.pools) or "none")}{escape(extra)}</div>'
                + render.precomputed(shipped_run.precomputed(d.run)))

    # job status ---------------------------------------------------------------------------------------
    def reference_times(self) -> dict[str, float]:
        """Seconds per step of the shipped demo run: what the ETAs of a step job start from."""
        if self._reference is None:
            self._reference = shipped_run.step_times(self.shipped_demo)
        return self._reference

    def _step_plan(self, run: str | None) -> tuple[JobStatus | None, list[str] | None, dict]:
        """The run's active job, the experiment's steps (on an attack run; a job that reports
        '<i>/<n> <step>' runs them) and the run's steps.json."""
        st = self.job_status(run)
        if st is None or not st.active:
            return st, None, {}
        from ddcs_core.experiment import step_names, steps_record

        r = self.store.run(run)
        experiment = r.config.get("experiment")
        return st, step_names(experiment) if experiment else None, steps_record(r)

    def status_line(self, run: str | None) -> str:
        """The compact line every view shows while a job runs on the run ('' otherwise)."""
        st, names, record = self._step_plan(run)
        return render.status_line(progress.job_line(st, names, record, self.reference_times()))

    def waiting(self, run: str | None, step: str, what: str) -> str | None:
        """'<what> comes with step i/n (name) of the running job, in about …', when a running job will
        make it (`step`: a step name, or a prefix ending in '-'); None otherwise."""
        st, names, record = self._step_plan(run)
        wait = progress.step_wait(step, st, names, record, self.reference_times())
        if wait is None:
            return None
        when = progress.duration(wait.eta_s)
        return (f"{what} comes with step {wait.step}/{wait.steps} ({wait.name}) of the {st.kind} job running on "
                f"this run{', in ' + when if when else ''}; this view refreshes when it lands.")

    def landed(self, run: str | None) -> str:
        """Changes whenever a file the views read changes (a pool lands, the map is stored)."""
        if not run:
            return ""
        try:
            return f"{hash(self.cache.get(run).stamp) & 0xFFFFFFFF:08x}"
        except DDCSInputError:  # the run went away: the next redraw says so
            return "gone"

    # targets ------------------------------------------------------------------------------------------
    def targets_view(self, run: str | None, pool: str | None, label: str = rows.ALL_CLASSES, status: str = "All",
                     page: int = 0, per_page: int = PER_PAGE) -> tuple[str, str, str, int]:
        """(summary HTML, gallery HTML, page label, page number actually shown)."""
        if not run:
            return self.run_line(run), "", "", 0
        d = self.data(run)
        if not pool:
            msg = self.waiting(run, "evaluate-", "The first evaluated pool") or (
                f"Run {run} has no evaluated pool yet: start the job 'evaluate' in the Run tab."
                if d.pools else f"Run {run} has no reconstructions yet.")
            page_rec = rows.targets_page(d, page, per_page, label or rows.ALL_CLASSES)
            return (render.notice(msg), render.targets_only(page_rec), render.page_label(page_rec), page_rec.page)
        report = d.evaluation(pool).report
        summary = render.summary(rows.summary(report), rows.profile_line(report))
        page_rec = rows.gallery_page(d, pool, page, per_page, label or rows.ALL_CLASSES, status or "All")
        return summary, render.gallery(page_rec), render.page_label(page_rec), page_rec.page

    def class_choices(self, run: str | None) -> list[str]:
        return rows.class_choices(self.data(run)) if run else [rows.ALL_CLASSES]

    # detail -------------------------------------------------------------------------------------------
    def detail_view(self, run: str | None, pool: str | None, target: int | None) -> str:
        if not run or not pool:
            return render.notice("Pick a run with an evaluated pool first.")
        if target is None:
            return render.notice("Click a target in the Targets gallery, the Map or the Defense list to see it here.")
        return render.detail(rows.detail(self.data(run), pool, int(target)))

    def neighbour(self, run: str, pool: str, target: int | None, step: int) -> int | None:
        if not run or not pool:
            return None
        d = self.data(run)
        if target is None:
            return int(d.order(pool)[0])
        return rows.neighbour(d, pool, int(target), step)

    # map ----------------------------------------------------------------------------------------------
    def map_view(self, run: str | None, pool: str | None) -> tuple[go.Figure | None, str]:
        """(plotly figure or None, note HTML)."""
        if not run:
            return None, self.run_line(run)
        d = self.data(run)
        md = map_data(d, pool)
        if md.message and (d.map() is None or md.stale):
            md.message = self.waiting(run, "map", "The map" if d.map() is None else "The updated map") or md.message
        if not md.traces:
            return None, render.notice(md.message, "info")
        note = render.notice(md.message, "warn") if md.message else ""
        how = ("UMAP of LPIPS embeddings (PCA first)" if md.method == "umap" else "first two principal components "
               "of the LPIPS embeddings (too few points for UMAP)")
        head = (f'<div class="ddcs-profile">{how} · {md.n_points:,} points · diamonds: targets '
                f'(matched / unmatched in {escape(pool or "—")}), dots: reconstructions by pool · '
                'hover for the image, click a point to open its target</div>')
        return figure(md, run), note + head

    def thumb(self, payload: object) -> dict:
        """The hovered map point's image; called from the browser with [run, kind, pool, index]."""
        try:
            run, kind, pool, index = payload
            if kind not in ("target", "recon"):
                raise DDCSInputError(f"unknown image kind {kind!r}")
            d = self.data(str(run))
            src = d.thumb(kind, int(index), str(pool) if kind == "recon" else None, max_side=160)
            return {"src": src}
        except (DDCSInputError, ValueError, TypeError) as exc:
            return {"error": str(exc)}

    # compare ------------------------------------------------------------------------------------------
    def compare_pairs(self, run: str | None) -> tuple[list[str], str | None, str | None]:
        pools = self.pools(run)
        a, b = rows.default_pair(pools)
        return pools, a, b

    def compare_view(self, run: str | None, a: str | None, b: str | None) -> tuple[str, str, str]:
        """(grids HTML, metrics table HTML, difference HTML)."""
        if not run:
            return "", self.run_line(run), ""
        d = self.data(run)
        items = []
        for name, path in rows.grid_files(d):
            try:
                items.append((name, grid_data_uri(path), ""))
            except DDCSInputError as exc:
                items.append((name, "", str(exc)))
        table = render.metrics_table(rows.metrics_rows(d))
        if not a or not b:
            wait = self.waiting(run, "evaluate-", "The next evaluated pool")
            return render.grids(items), table, render.notice(wait or "The run needs two evaluated pools to compare matches.")
        if a == b:
            return render.grids(items), table, render.notice("Pick two different pools.")
        diff = rows.match_difference(d, a, b)
        a_cards = [rows.card(d, a, int(t)) for t in diff.a_only[:DIFF_SHOWN]]
        b_cards = [rows.card(d, b, int(t)) for t in diff.b_only[:DIFF_SHOWN]]
        html = (render.difference_head(diff, a, b)
                + render.strip(a_cards, f"Matched by {a}, not by {b}", len(diff.a_only))
                + render.strip(b_cards, f"Matched by {b}, not by {a}", len(diff.b_only)))
        return render.grids(items), table, html

    # defense ------------------------------------------------------------------------------------------
    def defense_view(self, run: str | None, pool: str | None, shown: int = DEFENSE_SHOWN) -> tuple[str, str | None]:
        """(ranking HTML, path of the CSV written inside the run folder)."""
        if not run:
            return self.run_line(run), None
        d = self.data(run)
        if not d.evaluated:
            wait = self.waiting(run, "evaluate-", "The first evaluated pool")
            return render.notice(wait or f"Run {run} has no evaluated pool yet."), None
        pool = pool or rows.ALL_POOLS
        ranking = rows.exposure_ranking(d, pool)
        path = rows.write_exposure_csv(d, pool)
        top = [replace(r, path=rows.shown_path(r.path, d.targets.source))
               for r in ranking if r.matched][:max(1, int(shown))]
        return render.exposure(top, [d.thumb("target", r.target, max_side=64, lossless=False) for r in top], len(ranking)), str(path)

    # jobs ---------------------------------------------------------------------------------------------
    def job_status(self, run: str | None) -> JobStatus | None:
        return self.runner.status(self.store.run(run)) if run else None

    def start_job(self, run: str | None, kind: str, params: dict) -> JobStatus:
        if not run:
            raise DDCSInputError("no run selected")
        return self.runner.start(self.store.run(run), kind, params)

    def cancel_job(self, run: str | None) -> bool:
        return bool(run) and self.runner.cancel(self.store.run(run))

    def default_job(self, run: str | None) -> str | None:
        """The job the Run tab offers first: `attack` on an attack run (it resumes the remaining
        steps), `evaluate` on any other run."""
        kinds = job_kinds()
        attack_run = bool(run) and self.store.run(run).config.get("kind") == "experiment"
        preferred = [k for k in (("attack", "evaluate") if attack_run else ("evaluate",)) if k in kinds]
        return preferred[0] if preferred else min(kinds, default=None)

    @staticmethod
    def kind_help(kind: str | None) -> str:
        spec = job_kinds().get(kind or "")
        if spec is None:
            return ""
        return spec.description

    # attack runs ---------------------------------------------------------------------------------------
    def new_attack_run(self, name: str, settings: dict, device: str | None = None) -> Run:
        """A new experiment run on the demo world with these settings (AttackSettings' fields), its
        'attack' job started."""
        from ddcs_core.experiment import AttackSettings, create_attack_run

        name = (name or "").strip() or f"attack-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        check_name(name)
        if self.store.run(name).exists():
            raise DDCSInputError(f"run name {name!r} is taken in {self.store.root}; pick another")
        try:
            chosen = AttackSettings(**{k: tuple(v) if k == "modes" else v for k, v in settings.items()})
        except TypeError as exc:
            raise DDCSInputError(f"attack settings: {exc}") from exc
        if not chosen.modes:
            raise DDCSInputError("pick at least one transfer mode")
        run = create_attack_run(self.store.root, name, chosen, device=device or self.device)
        self.runner.start(run, "attack", {"device": device or self.device})
        return run

    def ensure_demo_run(self, progress: bool = True) -> Run:
        """The demo run (assets/configs/demo.yaml on the shipped world). On first start it is the shipped,
        precomputed run, installed in seconds; without one (or when it is refused) it is created and its
        steps started as a job, so the app shows pools as they finish. An unfinished one is resumed."""
        from ddcs_core.experiment import DEMO_RUN, create_attack_run, run_finished

        run = self.store.run(DEMO_RUN)
        if not run.exists() and self.shipped_demo is not None and (self.shipped_demo / shipped_run.MANIFEST).is_file():
            try:
                return shipped_run.install(self.store, DEMO_RUN, self.shipped_demo, progress=progress)
            except DDCSInputError as exc:
                log.warning("the shipped demo run is refused (%s); attacking live instead", exc)
        if not run.exists():
            run = create_attack_run(self.store.root, DEMO_RUN, device=self.device, progress=progress)
        status = self.runner.status(run)
        if not run_finished(run) and not (status is not None and status.active):
            self.runner.start(run, "attack", {"device": self.device})
        return run

    def rerun_demo(self, device: str | None = None) -> Run:
        """A new run `demo-live-<time>` with the demo attack's settings, attacked live in the background;
        the precomputed demo run stays as it is, to compare with."""
        from ddcs_core.experiment import create_attack_run

        name = f"demo-live-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        if self.store.run(name).exists():
            raise DDCSInputError(f"run {name} exists already; wait a second and try again")
        run = create_attack_run(self.store.root, name, device=device or self.device)
        self.runner.start(run, "attack", {"device": device or self.device})
        return run

    # evaluate -----------------------------------------------------------------------------------------
    def import_folders(self, targets_path: str, recon_path: str, name: str = "", profile: str = "fast",
                       device: str | None = None, update_map: bool = True) -> Run:
        """A new run from a targets folder and a reconstructions folder on the server, with its evaluation started."""
        targets_src = _source(targets_path, "targets folder")
        recon_src = _source(recon_path, "reconstructions folder")
        if targets_src == recon_src:
            raise DDCSInputError("the targets and the reconstructions are the same folder")
        name = (name or "").strip() or _default_name(recon_src)
        check_name(name)
        run = self.store.run(name)
        if run.exists():
            raise DDCSInputError(f"run name {name!r} is taken in {self.store.root}; pick another")
        recon = load_images(recon_src, progress=False)
        h, w = recon.size
        if h != w:
            raise DDCSInputError(f"{recon_src}: reconstructions are {h}x{w}, not square")
        targets = load_images(targets_src, size=h, progress=False)
        config = {"kind": "evaluate-folders", "targets": str(targets_src), "reconstructions": str(recon_src),
                  "profile": profile, "created": datetime.now().isoformat(timespec="seconds")}
        run = self.store.create(name, config, targets)
        pool = _slug(recon_src.stem if recon_src.is_file() else recon_src.name) or "recon"
        run.write_recon(pool, recon)
        self.runner.start(run, "evaluate", {"pool": pool, "profile": profile, "device": device or self.device,
                                            "class_agnostic": False, "update_map": update_map})
        return run


def _source(text: str, what: str) -> Path:
    """A folder (one subfolder per class) or an .npz on the server, checked before anything is read."""
    raw = (text or "").strip()
    if not raw:
        raise DDCSInputError(f"{what}: enter a path on the server")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DDCSInputError(f"{what} {raw}: not found on the server")
    if path.is_file() and path.suffix.lower() != ".npz":
        raise DDCSInputError(f"{what} {raw}: must be a folder with one subfolder per class, or an .npz file")
    if not path.is_file() and not path.is_dir():
        raise DDCSInputError(f"{what} {raw}: neither a folder nor a file")
    return path.resolve()


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:60]
    return slug


def _default_name(recon: Path) -> str:
    return f"eval-{_slug(recon.stem) or 'recon'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
