"""The Map tab: the run's UMAP of targets and reconstructions, a hovered point's image beside it."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ddcs_core.ui.scripts import MAP_PREVIEW
from ddcs_core.ui.session import Session
from ddcs_core.ui.views import Explorer

PREVIEW_EMPTY = '<div class="ddcs-preview"><div class="ddcs-preview-cap">Hover a point to see its image.<br>Click a point to open its target.</div></div>'


@dataclass(frozen=True)
class MapTab:
    """A click on a point opens its target and the button starts the 'map' job: both in app.py, as
    they change other tabs."""

    ex: Explorer
    tab: gr.Tab
    note: gr.HTML
    plot: gr.Plot
    side: gr.HTML  # the hovered point's image, fetched through the `thumb` server function
    compute_b: gr.Button

    @property
    def outputs(self) -> list:
        return [self.plot, self.note]

    def part(self, s: Session) -> dict:
        fig, note = self.ex.map_view(s.run, s.pool)
        return {self.plot: fig, self.note: note}


def build_map(ex: Explorer) -> MapTab:
    def thumb(payload):
        return ex.thumb(payload)

    with gr.Tab("Map", id="map") as tab:
        note = gr.HTML()
        with gr.Row():
            plot = gr.Plot(elem_id="ddcs-map", show_label=False, scale=4)
            side = gr.HTML(PREVIEW_EMPTY, js_on_load=MAP_PREVIEW, server_functions=[thumb],
                           elem_id="ddcs-preview", scale=1, min_width=220)
        compute_b = gr.Button("Compute or update the map", size="sm", scale=0)
    return MapTab(ex, tab, note, plot, side, compute_b)
