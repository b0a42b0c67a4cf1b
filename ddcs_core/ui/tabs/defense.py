"""The Defense tab: the training samples most exposed to an attack, and the full ranking as CSV."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ddcs_core.ui import rows
from ddcs_core.ui.scripts import OPEN_ON_CLICK
from ddcs_core.ui.session import Session
from ddcs_core.ui.shell import Shell, user_errors
from ddcs_core.ui.views import DEFENSE_SHOWN, Explorer


@dataclass(frozen=True)
class DefenseTab:
    """The pool and the number shown are session inputs, so a run change keeps them."""

    ex: Explorer
    tab: gr.Tab
    pool_dd: gr.Dropdown
    shown: gr.Slider
    download: gr.DownloadButton
    ranking: gr.HTML  # its thumbnails open their target (app.py)

    @property
    def outputs(self) -> list:
        return [self.pool_dd, self.ranking, self.download]

    def part(self, s: Session) -> dict:
        choices = [rows.ALL_POOLS, *self.ex.pools(s.run)]
        chosen = s.defense_pool if s.defense_pool in choices else rows.ALL_POOLS
        html, path = self.ex.defense_view(s.run, chosen, s.defense_n)
        return {self.pool_dd: gr.Dropdown(choices=choices, value=chosen), self.ranking: html,
                self.download: gr.DownloadButton(value=path, interactive=path is not None)}

    def wire(self, shell: Shell) -> None:
        @user_errors
        def on_defense(*vals):
            return self.part(Session.from_values(vals))

        self.pool_dd.input(on_defense, shell.session.components, self.outputs)
        self.shown.release(on_defense, shell.session.components, self.outputs)


def build_defense(ex: Explorer, shell: Shell) -> DefenseTab:
    with gr.Tab("Defense", id="defense") as tab:
        gr.Markdown("### Most exposed training samples\nRanked by how closely an attack reconstructed them "
                    "(smallest d_tar first): the samples a data owner should worry about.")
        with gr.Row():
            pool_dd = gr.Dropdown(label="Exposure to", choices=[rows.ALL_POOLS], value=rows.ALL_POOLS, scale=2)
            shown = gr.Slider(10, 500, value=DEFENSE_SHOWN, step=10, label="Show the top", scale=2)
            download = gr.DownloadButton("Download the full ranking (CSV)", value=None, scale=1, size="md")
        ranking = gr.HTML(js_on_load=OPEN_ON_CLICK)
    shell.session.bind(defense_pool=pool_dd, defense_n=shown)
    return DefenseTab(ex, tab, pool_dd, shown, download, ranking)
