"""What a run did at each node of its saga's author-level diagram (:mod:`.flow`): the
marks ``concordia graph --run`` and the run page colour nodes by.

A fan-out's items mark their step's node (and its undo node): the diagram draws a step,
not its items, so ``undo sync`` shows undone once its items were undone. Of two marks a
node could get, the one that says more wins (a failure over a success, work in hand over
work done). Pure: no run, store or engine is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from concordia.machine.flow import step_id, undo_id
from concordia.status import CompStatus, RunStatus, StepStatus


class Mark(StrEnum):
    """What a run did at a node."""

    DONE = "done"
    ACTIVE = "active"
    FAILED = "failed"
    SKIPPED = "skipped"
    CAUGHT = "caught"
    UNDONE = "undone"
    UNDO_FAILED = "undo-failed"


class Visit(NamedTuple):
    """One journal record of a run as the diagram sees it: the step it belongs to (a
    fan-out item's is its step's), its status and its compensation's, its attempts."""

    step: str
    status: StepStatus
    comp_status: CompStatus | None
    attempt: int


_FORWARD = {StepStatus.SUCCEEDED: Mark.DONE, StepStatus.FAILED: Mark.FAILED,
            StepStatus.RUNNING: Mark.ACTIVE, StepStatus.AWAITING: Mark.ACTIVE,
            StepStatus.WAITING_RETRY: Mark.ACTIVE, StepStatus.READY: Mark.ACTIVE,
            StepStatus.SKIPPED: Mark.SKIPPED, StepStatus.CAUGHT: Mark.CAUGHT}
_UNDO = {CompStatus.SUCCEEDED: Mark.UNDONE, CompStatus.FAILED: Mark.UNDO_FAILED,
         CompStatus.RUNNING: Mark.ACTIVE, CompStatus.WAITING_RETRY: Mark.ACTIVE,
         CompStatus.AWAITING: Mark.ACTIVE}
# Which of two marks a node shows: the higher.
_RANK = {Mark.SKIPPED: 0, Mark.DONE: 1, Mark.UNDONE: 1, Mark.CAUGHT: 2, Mark.ACTIVE: 3,
         Mark.FAILED: 4, Mark.UNDO_FAILED: 4}
# The run's ends that are nodes of the diagram.
_ENDS = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED})


def run_marks(visits: Iterable[Visit], run_status: RunStatus) -> dict[str, Mark]:
    """Node id -> what the run did there."""
    marks: dict[str, Mark] = {}
    for visit in visits:
        forward = _FORWARD.get(visit.status)
        if forward is not None:
            _mark(marks, step_id(visit.step), forward)
        undo = _UNDO.get(visit.comp_status) if visit.comp_status is not None else None
        if undo is not None:
            _mark(marks, undo_id(visit.step), undo)
    if run_status in _ENDS:
        marks[str(run_status)] = Mark.DONE
    return marks


def _mark(marks: dict[str, Mark], node: str, mark: Mark) -> None:
    current = marks.get(node)
    if current is None or _RANK[mark] >= _RANK[current]:
        marks[node] = mark
