"""The Gradio app over the engine. The views' data come from pure modules (rows, map_data, render, views,
session); only the Gradio layer (app.py, shell.py, style.py, tabs/) imports gradio.

`build_app` and `launch` are imported lazily so that the pure modules (and their tests) never pay for gradio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr


def build_app(*args: Any, **kwargs: Any) -> gr.Blocks:
    """See ddcs_core.ui.app.build_app."""
    from ddcs_core.ui.app import build_app as build

    return build(*args, **kwargs)


def launch(*args: Any, **kwargs: Any) -> Any:
    """See ddcs_core.ui.app.launch."""
    from ddcs_core.ui.app import launch as serve

    return serve(*args, **kwargs)
