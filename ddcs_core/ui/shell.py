"""The app's frame around the tabs: title, run and pool pickers, the status line, the session's own
state and the job timer; and what every tab's wiring shares (user errors as warnings, quick events)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Protocol

import gradio as gr

from ddcs_core.errors import DDCSInputError
from ddcs_core.ui import render
from ddcs_core.ui.session import Session, SessionInputs

INTRO = ("<h1>DDCS Explorer</h1><p>Sample-level evaluation of model inversion attacks: which private training "
         "samples an attack reconstructed, how closely, and which it missed.</p>")
# quick browsing events skip the queue; their errors show in the view's own box, since warnings need the queue
FAST = {"queue": False, "show_progress": "hidden"}


def user_errors(fn: Callable | None = None, *, box: gr.HTML | None = None) -> Callable:
    """Show a bad input's message as a warning (and in `box`, if given), never a traceback; nothing else changes."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DDCSInputError as exc:
                gr.Warning(escape(str(exc)))
                return {box: render.notice(str(exc), "error")} if box is not None else gr.skip()
        return wrapper
    return decorate(fn) if fn is not None else decorate


@dataclass(frozen=True)
class Shell:
    """The components outside the tabs that the tabs' handlers read or update."""

    run_dd: gr.Dropdown
    pool_dd: gr.Dropdown
    run_info: gr.HTML
    reload_b: gr.Button
    status_html: gr.HTML  # the running job, whichever tab is open
    tab_st: gr.State  # the open tab's id
    seen_st: gr.State  # the session.Status the views last showed
    opened_st: gr.State  # the id of the job started from Evaluate, whose end opens Targets
    timer: gr.Timer
    session: SessionInputs


def build_shell() -> Shell:
    """Title, pickers and status line (call inside the app's gr.Blocks, before its gr.Tabs)."""
    tab_st, seen_st, opened_st = gr.State("targets"), gr.State(None), gr.State("")
    timer = gr.Timer(1.0)  # job status, outside the tabs so it ticks whichever tab is open
    gr.HTML(INTRO, elem_id="ddcs-title")
    with gr.Row():
        run_dd = gr.Dropdown(label="Run", choices=[], scale=3, elem_id="ddcs-run")
        pool_dd = gr.Dropdown(label="Pool (reconstructions)", choices=[], scale=3, elem_id="ddcs-pool")
    with gr.Row():
        run_info = gr.HTML(scale=5)
        reload_b = gr.Button("Reload runs", size="sm", scale=0, min_width=110)
    status_html = gr.HTML(elem_id="ddcs-status-line")
    session = SessionInputs()
    session.bind(run=run_dd, pool=pool_dd, tab=tab_st)
    return Shell(run_dd, pool_dd, run_info, reload_b, status_html, tab_st, seen_st, opened_st, timer, session)


class View(Protocol):
    """A tab drawn when it is opened (and when the run changes while it is open)."""

    @property
    def tab(self) -> gr.Tab: ...

    @property
    def outputs(self) -> list:
        """The components `part` updates."""

    def part(self, s: Session) -> dict:
        """Its components' values for the session."""
