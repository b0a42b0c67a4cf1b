"""The Run tab: the job running on the selected run (its form, progress and log), re-running the demo
attack live, and a new attack run on the demo world."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ddcs_core.experiment import AttackSettings
from ddcs_core.jobs import Param, devices, job_kinds
from ddcs_core.runs import Run
from ddcs_core.shipped_run import ATTACK_COMMAND as DEMO_COMMAND
from ddcs_core.ui import render
from ddcs_core.ui.session import Session, Status
from ddcs_core.ui.shell import Shell, user_errors
from ddcs_core.ui.views import Explorer

ATTACK = AttackSettings()


@dataclass(frozen=True)
class RunTab:
    """Its buttons that open a new run (re-run the demo, new attack) are wired in app.py, as they
    redraw every view; the job form's start and cancel are wired here."""

    ex: Explorer
    shell: Shell
    tab: gr.Tab
    rerun_b: gr.Button
    rerun_msg: gr.HTML
    kind_dd: gr.Dropdown
    kind_md: gr.Markdown
    job_html: gr.HTML
    job_log: gr.Textbox
    attack_form: dict[str, gr.components.Component]  # 'name', AttackSettings' fields, 'device'
    attack_b: gr.Button
    attack_msg: gr.HTML

    @property
    def outputs(self) -> list:
        return [self.job_html, self.job_log, self.shell.seen_st, self.shell.status_html]

    def part(self, s: Session) -> dict:
        """The job and the status line; the status the timer compares from now on."""
        st = self.ex.job_status(s.run)
        return {self.job_html: render.job(st), self.job_log: "\n".join(st.log) if st else "",
                self.shell.seen_st: Status.of(s.run, st, self.ex.landed(s.run)),
                self.shell.status_html: self.ex.status_line(s.run)}

    def wire(self, shell: Shell) -> None:
        self.kind_dd.change(Explorer.kind_help, self.kind_dd, self.kind_md)

    def job_form(self, kind: str, run: str | None) -> None:
        """The chosen job kind's parameters, and Start / Cancel (drawn again when the kind or run changes)."""
        spec = job_kinds().get(kind)
        if spec is None:
            gr.Markdown("No job kinds are registered.")
            return
        target_run = self.ex.store.run(run) if run else None
        with gr.Row():
            params = [_param_input(p, target_run, self.ex.device) for p in spec.params]
        with gr.Row():
            start_b = gr.Button(f"Start {kind}", variant="primary", scale=0, min_width=200)
            cancel_b = gr.Button("Cancel job", variant="stop", scale=0, min_width=160)

        @user_errors
        def start(*vals):
            s = Session.from_values(vals[len(params):])
            self.ex.start_job(s.run, kind, {p.name: v for p, v in zip(spec.params, vals)})
            return self.part(s)

        @user_errors
        def on_cancel(*vals):
            s = Session.from_values(vals)
            if not self.ex.cancel_job(s.run):
                gr.Info("No job is running on this run.")
            return self.part(s)

        start_b.click(start, [*params, *self.shell.session.components], self.outputs)
        cancel_b.click(on_cancel, self.shell.session.components, self.outputs)


def build_run(ex: Explorer, shell: Shell) -> RunTab:
    with gr.Tab("Run", id="run") as tab:
        with gr.Row(equal_height=True):
            rerun_b = gr.Button("Re-run the demo attack", size="sm", scale=0, min_width=220, elem_id="ddcs-rerun-demo")
            gr.Markdown("Attacks live as `" + DEMO_COMMAND + "` does, into a new run `demo-live-…`; its "
                        "pools appear as they finish. The precomputed demo run stays, to compare with.")
        rerun_msg = gr.HTML()
        gr.Markdown("### Start a job on the selected run\nOne job at a time per run; browsing stays available meanwhile.")
        with gr.Row(equal_height=True):
            kind_dd = gr.Dropdown(label="Job", choices=sorted(job_kinds()), value=ex.default_job(None), scale=1)
            kind_md = gr.Markdown(Explorer.kind_help(kind_dd.value), elem_id="ddcs-kind-help")

        @gr.render(inputs=[kind_dd, shell.run_dd])
        def job_form(kind: str, run: str | None) -> None:
            view.job_form(kind, run)  # drawn on page load, when `view` and every session input exist

        job_html = gr.HTML()
        job_log = gr.Textbox(label="Log", lines=10, max_lines=10, interactive=False, autoscroll=True)
        with gr.Accordion("New attack run on the demo world", open=False, elem_id="ddcs-new-attack"):
            gr.Markdown("Transfer learning in the chosen modes, inversion with every generator, dual pools "
                        "and their evaluation, as `assets/configs/demo.yaml` with these settings. It becomes "
                        "a new run; its progress shows above.")
            with gr.Row():
                name = gr.Textbox(label="Run name (optional)", placeholder="attack-ngd-k10")
                modes = gr.CheckboxGroup(list(ATTACK.modes), value=list(ATTACK.modes), label="Transfer modes")
                projection = gr.Radio(["reference", "damped"], value=ATTACK.projection, label="NGD projection",
                                      info="reference: basis at fixed latents (paper) · damped: refreshed, keeps the complement")
            with gr.Row():
                attack_form = {
                    "name": name, "modes": modes, "projection": projection,
                    "steps": gr.Number(ATTACK.steps, label="Transfer steps", precision=0, minimum=1),
                    "lam": gr.Number(ATTACK.lam, label="λ (entropy weight)", minimum=0),
                    "k": gr.Number(ATTACK.k, label="k (eigenpairs)", precision=0, minimum=1),
                    "mu": gr.Number(ATTACK.mu, label="μ (damping)", minimum=0),
                    "final_per_class": gr.Number(ATTACK.final_per_class, label="Samples per class", precision=0, minimum=1),
                    "classes": gr.Number(ATTACK.classes, label="Classes (0: all)", precision=0, minimum=0),
                    "seed": gr.Number(ATTACK.seed, label="Seed", precision=0),
                    "device": gr.Dropdown(devices(), value=ex.device if ex.device in devices() else "auto", label="Device")}
            attack_b = gr.Button("Create the run and start the attack", variant="primary", scale=0, min_width=320)
            attack_msg = gr.HTML()
    view = RunTab(ex, shell, tab, rerun_b, rerun_msg, kind_dd, kind_md, job_html, job_log, attack_form, attack_b,
                  attack_msg)
    return view


def _param_input(p: Param, run: Run | None, device: str) -> gr.components.Component:
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
