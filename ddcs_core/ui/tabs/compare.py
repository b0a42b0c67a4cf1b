"""The Compare tab: every pool's fixed-latent grid and metrics, and what two pools reconstructed differently."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ddcs_core.ui.scripts import OPEN_ON_CLICK
from ddcs_core.ui.session import Session
from ddcs_core.ui.shell import Shell, user_errors
from ddcs_core.ui.views import Explorer


@dataclass(frozen=True)
class CompareTab:
    """The two pools compared are session inputs, kept across runs when the new run has them."""

    ex: Explorer
    tab: gr.Tab
    grids: gr.HTML
    metrics: gr.HTML
    pool_a: gr.Dropdown
    pool_b: gr.Dropdown
    diff: gr.HTML  # its thumbnails open their target (app.py)

    @property
    def outputs(self) -> list:
        return [self.pool_a, self.pool_b, self.grids, self.metrics, self.diff]

    def part(self, s: Session) -> dict:
        pools, first, second = self.ex.compare_pairs(s.run)
        a = s.pool_a if s.pool_a in pools else first
        b = s.pool_b if s.pool_b in pools else second
        grids, metrics, diff = self.ex.compare_view(s.run, a, b)
        return {self.pool_a: gr.Dropdown(choices=pools, value=a), self.pool_b: gr.Dropdown(choices=pools, value=b),
                self.grids: grids, self.metrics: metrics, self.diff: diff}

    def wire(self, shell: Shell) -> None:
        @user_errors
        def on_compare(*vals):
            return self.part(Session.from_values(vals))

        self.pool_a.input(on_compare, shell.session.components, self.outputs)
        self.pool_b.input(on_compare, shell.session.components, self.outputs)


def build_compare(ex: Explorer, shell: Shell) -> CompareTab:
    with gr.Tab("Compare", id="compare") as tab:
        gr.Markdown("### Pools side by side\nThe same fixed latents from each generator, then every pool's metrics.")
        grids = gr.HTML()
        metrics = gr.HTML()
        with gr.Row():
            pool_a = gr.Dropdown(label="Pool A", choices=[])
            pool_b = gr.Dropdown(label="Pool B", choices=[])
        diff = gr.HTML(js_on_load=OPEN_ON_CLICK)
    shell.session.bind(pool_a=pool_a, pool_b=pool_b)
    return CompareTab(ex, tab, grids, metrics, pool_a, pool_b, diff)
