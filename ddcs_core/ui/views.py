"""The views' contents for a given run and pool: HTML strings, figures and file paths, no gradio.

`Explorer` owns the run store, the cache of loaded runs and the job runner, and answers each view
with what it shows. The Gradio layer (app.py, tabs/) only wires these answers to components; errors in
input arrive here as DDCSInputError and leave as messages for the user.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from ddcs_core import shipped_run
from ddcs_core.data.images import ImageSet, load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.jobs import JobRunner, JobStatus, job_kinds
from ddcs_core.roots import DataRoots
from ddcs_core.runs import Run, RunStore, check_name
from ddcs_core.ui import progress, render, rows
from ddcs_core.ui.map_data import figure, map_data
from ddcs_core.ui.rundata import RunCache, RunData
from ddcs_core.ui.thumbs import grid_data_uri
from ddcs_core.uploads import UploadLimits, unpack_upload

if TYPE_CHECKING:
    import plotly.graph_objects as go

PER_PAGE = 40
DIFF_SHOWN = 24
DEFENSE_SHOWN = 30
UPLOADS = ".uploads"  # under the run store: uploads unpacked while they load (never served)
log = logging.getLogger(__name__)


class Explorer:
    """Everything the app shows, computed from one run store."""

    def __init__(self, runs_dir: str | Path, device: str = "auto", runner: JobRunner | None = None,
                 data_roots: list[str | Path] | None = None, upload_limits: UploadLimits = UploadLimits(),
                 nproc: int = 1) -> None:
        """`nproc` > 1: jobs that share their work run as torchrun subprocesses of that many processes."""
        self.store = RunStore(runs_dir)
        self.roots = DataRoots.for_store(self.store.root, data_roots)
        self.upload_limits = upload_limits
        self.cache = RunCache(self.store)
        self.runner = runner or JobRunner(nproc)
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
                       device: str | None = None, update_map: bool = True, targets_upload: str | None = None,
                       recon_upload: str | None = None) -> Run:
        """A new run from targets and reconstructions, each a folder or .npz under the data roots or an
        uploaded .zip or .npz (unpacked under the store's .uploads, removed once loaded), its evaluation started."""
        name = (name or "").strip()
        if name:
            self._free_name(name)
        staging = None
        if targets_upload or recon_upload:
            staging = Path(tempfile.mkdtemp(prefix="upload-", dir=self._uploads_dir()))
        try:
            targets_src, targets_label, _ = self._input(targets_path, targets_upload, "targets folder", staging,
                                                        "targets")
            recon_src, recon_label, recon_stem = self._input(recon_path, recon_upload, "reconstructions folder",
                                                             staging, "recon")
            if targets_src == recon_src:
                raise DDCSInputError("the targets and the reconstructions are the same folder")
            name = name or _default_name(recon_stem)
            self._free_name(name)
            recon = _load(recon_src, recon_label)
            h, w = recon.size
            if h != w:
                raise DDCSInputError(f"{recon_label}: reconstructions are {h}x{w}, not square")
            targets = _load(targets_src, targets_label, size=h)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        config = {"kind": "evaluate-folders", "targets": targets_label, "reconstructions": recon_label,
                  "profile": profile, "created": datetime.now().isoformat(timespec="seconds")}
        run = self.store.create(name, config, targets)
        pool = _slug(recon_stem) or "recon"
        run.write_recon(pool, recon)
        self.runner.start(run, "evaluate", {"pool": pool, "profile": profile, "device": device or self.device,
                                            "class_agnostic": False, "update_map": update_map})
        return run

    def _free_name(self, name: str) -> None:
        check_name(name)
        if self.store.run(name).exists():
            raise DDCSInputError(f"run name {name!r} is taken in {self.store.root}; pick another")

    def _uploads_dir(self) -> Path:
        folder = self.store.root / UPLOADS
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _input(self, path: str, upload: str | None, what: str, staging: Path | None,
               part: str) -> tuple[Path, str, str]:
        """(the image source to load, how the run records it, its stem for names) of an upload or a path."""
        if upload and (path or "").strip():
            raise DDCSInputError(f"{what}: give an upload or a path on the server, not both (clear one)")
        if upload:
            file_name = Path(upload).name
            src = unpack_upload(upload, staging / part, self.upload_limits, file_name)
            return src, f"upload:{file_name}", Path(file_name).stem
        src = self.roots.image_source(path, what)
        return src, str(src), src.stem if src.is_file() else src.name


def _load(src: Path, label: str, size: int | None = None) -> ImageSet:
    """The images of `src`, their provenance and errors naming what the user gave (an upload's name, not
    the folder it was unpacked into)."""
    prefix = str(src)
    try:
        images = load_images(src, size=size, progress=False)
    except DDCSInputError as exc:
        raise DDCSInputError(str(exc).replace(prefix, label)) from None
    except OSError as exc:
        raise DDCSInputError(f"{label}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if label == prefix:
        return images
    return replace(images, paths=[label + p[len(prefix):] for p in images.paths], source=label)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:60]
    return slug


def _default_name(stem: str) -> str:
    return f"eval-{_slug(stem) or 'recon'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
