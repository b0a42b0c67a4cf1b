"""The Target detail tab: one target beside its reconstructions, and steps to the next harder or easier one."""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr

from ddcs_core.ui.session import Session
from ddcs_core.ui.shell import FAST, Shell, user_errors
from ddcs_core.ui.views import Explorer


@dataclass(frozen=True)
class DetailTab:
    """Opened from any view's thumbnails (app.py), or stepped through in hardest-first order."""

    ex: Explorer
    tab: gr.Tab
    harder_b: gr.Button
    easier_b: gr.Button
    detail: gr.HTML
    target_st: gr.State  # the target shown, by index

    @property
    def outputs(self) -> list:
        return [self.detail]

    def part(self, s: Session) -> dict:
        return {self.detail: self.ex.detail_view(s.run, s.pool, s.target)}

    def wire(self, shell: Shell) -> None:
        def on_step(step: int):
            @user_errors(box=self.detail)
            def go(*vals):
                s = Session.from_values(vals)
                s = replace(s, target=self.ex.neighbour(s.run, s.pool, s.target, step))
                return {self.target_st: s.target, **self.part(s)}
            return go

        self.harder_b.click(on_step(-1), shell.session.components, [self.target_st, self.detail], **FAST)
        self.easier_b.click(on_step(+1), shell.session.components, [self.target_st, self.detail], **FAST)


def build_detail(ex: Explorer, shell: Shell) -> DetailTab:
    with gr.Tab("Target detail", id="detail") as tab:
        target_st = gr.State(None)
        with gr.Row():
            harder_b = gr.Button("← Harder target", size="sm", scale=0, min_width=150)
            easier_b = gr.Button("Easier target →", size="sm", scale=0, min_width=150)
        detail = gr.HTML(elem_id="ddcs-detail")
    shell.session.bind(target=target_st)
    return DetailTab(ex, tab, harder_b, easier_b, detail, target_st)
