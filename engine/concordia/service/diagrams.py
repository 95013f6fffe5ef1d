"""Saga diagrams for the API and the page: the author-level graph ``concordia graph`` draws.

The same flow (:mod:`concordia.machine.flow`), the same run colouring as ``concordia
graph --run`` (:func:`concordia.cli.graph_cmd.run_marks`), plus what a page needs: the
path the run took (:mod:`concordia.machine.flow_path`) drawn bold, and the nodes where it
stands now outlined.
"""

from __future__ import annotations

from typing import Literal

from starlette.responses import Response

from concordia.cli.graph_cmd import run_marks, step_of_record
from concordia.definitions.models import Saga
from concordia.machine.flow import Flow, build_flow, step_id, undo_id
from concordia.machine.flow_path import path_taken
from concordia.machine.flow_render import flow_mermaid, flow_svg
from concordia.runtime.views import RunView
from concordia.status import Kind, RunStatus

Format = Literal["svg", "mermaid"]


def draw(saga: Saga, fmt: Format, view: RunView | None = None) -> str:
    """``saga`` as SVG or Mermaid; with ``view``, coloured by what that run did."""
    flow = build_flow(saga)
    render = flow_svg if fmt == "svg" else flow_mermaid
    if view is None:
        return render(flow)
    marks = run_marks(view)
    retried = {step_id(step_of_record(h.step)) for h in view.history
               if h.kind == Kind.STEP_RETRY_SCHEDULED and h.step is not None}
    timed_out = {step_id(step_of_record(h.step)) for h in view.history
                 if h.kind == Kind.AWAIT_TIMEOUT and h.step is not None}
    path = path_taken(flow, marks, retried, timed_out)
    return render(flow, marks, path, current_nodes(flow, view, marks))


def current_nodes(flow: Flow, view: RunView, marks: dict[str, str]) -> set[str]:
    """Where the run stands: the steps or compensations in hand, else the end it reached,
    else (halted) the compensations that failed."""
    active = {node for node, mark in marks.items() if mark == "active"}
    if active:
        return active
    if view.status in (RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED) and (
            str(view.status) in flow.nodes):
        return {str(view.status)}
    halted = {undo_id(step_of_record(s.name)) for s in view.steps if s.comp_status == "failed"}
    return (halted or {step_id(step_of_record(s.name)) for s in view.steps
                       if s.status == "failed"}) & set(flow.nodes)


def diagram_response(text: str, fmt: Format) -> Response:
    """A drawn diagram as an HTTP answer: SVG as an image, Mermaid as text."""
    media = "image/svg+xml" if fmt == "svg" else "text/plain; charset=utf-8"
    return Response(text, media_type=media)
