"""A saga's author-level diagram (:mod:`.flow`), drawn for one run: the nodes coloured by
what it did there (:mod:`.marks`), the path it took drawn bold (:mod:`.flow_path`), the
nodes where it stands now outlined. ``concordia graph --run`` and the run page draw it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

from concordia.definitions.models import Saga
from concordia.machine.flow import Flow, build_flow, step_id, undo_id
from concordia.machine.flow_path import path_taken
from concordia.machine.flow_render import flow_dot, flow_mermaid, flow_svg
from concordia.machine.marks import Mark, Visit, run_marks
from concordia.status import CompStatus, RunStatus, StepStatus

Format = Literal["svg", "mermaid", "dot"]


def draw(saga: Saga, fmt: Format, run: tuple[Sequence[Visit], RunStatus,
                                             Collection[str]] | None = None) -> str:
    """``saga`` as SVG, Mermaid or DOT; with ``run`` (its visits, its status, the awaits
    that timed out), coloured by what that run did and with the path it took (DOT: the
    colours only)."""
    flow = build_flow(saga)
    if run is None:
        return {"svg": flow_svg, "mermaid": flow_mermaid, "dot": flow_dot}[fmt](flow)
    visits, status, timed_out = run
    marks = run_marks(visits, status)
    if fmt == "dot":
        return flow_dot(flow, marks)
    retried = {step_id(v.step) for v in visits if v.attempt > 1}
    path = path_taken(flow, marks, retried, {step_id(s) for s in timed_out})
    render = flow_svg if fmt == "svg" else flow_mermaid
    return render(flow, marks, path, current_nodes(flow, visits, status, marks))


def current_nodes(flow: Flow, visits: Sequence[Visit], status: RunStatus,
                  marks: dict[str, Mark]) -> set[str]:
    """Where the run stands: the steps or compensations in hand, else the end it reached,
    else (halted) the compensations that failed, else the steps that failed."""
    active = {node for node, mark in marks.items() if mark == Mark.ACTIVE}
    if active:
        return active
    if str(status) in flow.nodes:
        return {str(status)}
    halted = {undo_id(v.step) for v in visits if v.comp_status == CompStatus.FAILED}
    failed = {step_id(v.step) for v in visits if v.status == StepStatus.FAILED}
    return (halted or failed) & set(flow.nodes)
