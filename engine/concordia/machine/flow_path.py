"""The way one run went through its saga's author-level diagram (:mod:`.flow`).

Given the marks a run leaves on the nodes (``done``, ``active``, ``failed``, ``skipped``,
``caught``, ``undone``, ``undo-failed``; see ``concordia graph --run``), the steps it
retried and the awaits that timed out, :func:`path_taken` picks the edges the run
travelled, so a drawing can show the path taken and not only where it stands. Pure: no
run, store or engine is needed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from concordia.machine.flow import Flow
from concordia.machine.marks import Mark


def path_taken(flow: Flow, marks: Mapping[str, str], retried: Collection[str] = (),
               timed_out: Collection[str] = ()) -> frozenset[int]:
    """Indexes into ``flow.edges`` of the edges the run travelled.

    ``retried`` and ``timed_out`` are node ids (steps with more than one attempt, awaits
    whose timeout fired).
    """
    taken: set[int] = set()
    for i, edge in enumerate(flow.edges):
        source, target = marks.get(edge.source), marks.get(edge.target)
        if edge.kind in ("next", "approve"):
            went = (edge.source == "start" or source == Mark.DONE) and target is not None
        elif edge.kind in ("fail", "reject"):
            went = source == Mark.FAILED and target is not None
        elif edge.kind in ("timeout", "goto"):
            went = edge.source in timed_out and target is not None
        elif edge.kind == "undo":
            went = source == Mark.UNDONE and target is not None
        elif edge.kind == "skip":
            went = source == Mark.SKIPPED and target is not None
        elif edge.kind == "catch":
            went = source == Mark.CAUGHT and target is not None
        else:  # retry
            went = edge.source in retried
        if went:
            taken.add(i)
    return frozenset(taken)
