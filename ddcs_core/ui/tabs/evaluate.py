"""The Evaluate tab: a new run from uploaded or server-side targets and reconstructions."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import gradio as gr

from ddcs_core.choices import PROFILES
from ddcs_core.jobs import devices
from ddcs_core.ui.views import Explorer


@dataclass(frozen=True)
class EvaluateTab:
    """Its button creates a run and opens the Run tab (wired in app.py, as it redraws every view)."""

    form: dict[str, gr.components.Component]  # by the name of Explorer.import_folders' argument
    evaluate_b: gr.Button
    msg: gr.HTML


def build_evaluate(ex: Explorer) -> EvaluateTab:
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("### Evaluate any attack's output\nUpload two .zip files (one folder per class, class "
                    "names matching) or .npz files, or name folders or .npz files on this server under its "
                    f"data roots ({escape(ex.roots.describe())}). A new run is created and evaluated; its "
                    "progress shows in the Run tab and the Targets view opens when it is done.")
        with gr.Row():
            targets_up = gr.File(label="Targets (private training set): .zip or .npz", file_types=[".zip", ".npz"],
                                 type="filepath")
            recon_up = gr.File(label="Reconstructions: .zip or .npz", file_types=[".zip", ".npz"], type="filepath")
        with gr.Row():
            targets = gr.Textbox(label="…or a targets folder on the server", placeholder="lfw-private")
            recon = gr.Textbox(label="…or a reconstructions folder on the server", placeholder="attack-output")
        with gr.Row():
            name = gr.Textbox(label="New run name (optional)", placeholder="eval-myattack")
            profile = gr.Radio(list(PROFILES), value="fast", label="Profile",
                               info="paper: LPIPS-VGG at 256×256 · fast: LPIPS-alex at native size · official: the official code's preparation")
            device = gr.Dropdown(devices(), value=ex.device if ex.device in devices() else "auto", label="Device")
        with gr.Row():
            evaluate_b = gr.Button("Create the run and evaluate", variant="primary", scale=0, min_width=320)
        msg = gr.HTML()
    form = {"targets_path": targets, "recon_path": recon, "targets_upload": targets_up, "recon_upload": recon_up,
            "name": name, "profile": profile, "device": device}
    return EvaluateTab(form, evaluate_b, msg)
