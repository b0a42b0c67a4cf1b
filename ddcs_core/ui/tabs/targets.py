"""The Targets tab: the run's targets hardest first, filtered by class and status, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr

from ddcs_core.ui import rows
from ddcs_core.ui.scripts import OPEN_ON_CLICK
from ddcs_core.ui.session import Session
from ddcs_core.ui.shell import FAST, Shell, user_errors
from ddcs_core.ui.views import Explorer


@dataclass(frozen=True)
class TargetsTab:
    """Drawn with every run or pool change, whichever tab is open (the other tabs wait to be opened)."""

    ex: Explorer
    tab: gr.Tab
    summary: gr.HTML
    class_dd: gr.Dropdown
    status_rd: gr.Radio
    gallery: gr.HTML
    prev_b: gr.Button
    page_md: gr.Markdown
    next_b: gr.Button
    page_st: gr.State  # the page shown (clamped by the view)

    @property
    def outputs(self) -> list:
        return [self.summary, self.gallery, self.page_md, self.page_st]

    def part(self, s: Session) -> dict:
        summary, gallery, label, shown = self.ex.targets_view(s.run, s.pool, s.label, s.status, s.page)
        return {self.summary: summary, self.gallery: gallery, self.page_md: label, self.page_st: shown}

    def wire(self, shell: Shell) -> None:
        @user_errors(box=self.gallery)
        def on_filter(*vals):
            return self.part(replace(Session.from_values(vals), page=0))

        def on_page(step: int):
            @user_errors(box=self.gallery)
            def go(*vals):
                s = Session.from_values(vals)
                return self.part(replace(s, page=s.page + step))
            return go

        inputs = shell.session.components
        self.class_dd.input(on_filter, inputs, self.outputs, **FAST)
        self.status_rd.input(on_filter, inputs, self.outputs, **FAST)
        self.prev_b.click(on_page(-1), inputs, self.outputs, **FAST)
        self.next_b.click(on_page(+1), inputs, self.outputs, **FAST)


def build_targets(ex: Explorer, shell: Shell) -> TargetsTab:
    with gr.Tab("Targets", id="targets") as tab:
        page_st = gr.State(0)
        summary = gr.HTML(elem_id="ddcs-summary")
        with gr.Row():
            class_dd = gr.Dropdown(label="Class", choices=[rows.ALL_CLASSES], value=rows.ALL_CLASSES, scale=2)
            status_rd = gr.Radio(list(rows.STATUSES), value="All", label="Targets", scale=2)
        gallery = gr.HTML(js_on_load=OPEN_ON_CLICK, elem_id="ddcs-gallery")
        with gr.Row(elem_id="ddcs-pager"):
            prev_b = gr.Button("← Previous", size="sm", scale=0, min_width=120)
            page_md = gr.Markdown(elem_id="ddcs-page-label")
            next_b = gr.Button("Next →", size="sm", scale=0, min_width=120)
    shell.session.bind(label=class_dd, status=status_rd, page=page_st)
    return TargetsTab(ex, tab, summary, class_dd, status_rd, gallery, prev_b, page_md, next_b, page_st)
