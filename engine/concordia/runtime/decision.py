"""What the planner decides for a run: one :class:`Decision`, carried out by the executor.

The kinds (the planner's module docstring says when each is taken):

- ``start``, ``compensate``, ``move``, ``wait``, ``end``: the core of every saga;
- ``check``: evaluate the conditions (``if``) of these steps;
- ``catch``: a catch entry took this failed step's error: journal it caught;
- ``expand``: evaluate this fan-out's list; ``items``: start these items;
  ``settle``: the fan-out is over (``event``: ``succeeded`` or ``failed``, with the
  failing item as the second name); ``undo_item``: compensate this item;
- ``child``: start this child saga, or look at it after its end woke the run;
  ``undo_child``: compensate this child saga (ask it to undo, or look at it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from concordia.store.records import RunRecord

DecisionKind = Literal["start", "compensate", "move", "wait", "end", "check", "catch",
                       "expand", "items", "settle", "undo_item", "child", "undo_child"]
# The kinds the language's constructs add (carried out by concordia.runtime.constructs).
CONSTRUCT_KINDS = frozenset({"check", "catch", "expand", "items", "settle", "undo_item",
                             "child", "undo_child"})


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do next for one run."""

    kind: DecisionKind
    steps: tuple[str, ...] = ()
    event: str | None = None
    wake_at: float | None = None
    suspended: bool = False


END = Decision("end")
MOVES = {name: Decision("move", event=name) for name in (
    "done", "fail", "cancel", "undone", "stuck", "finish_compensated", "finish_failed",
    "finish_cancelled")}


def undo_finished(run: RunRecord, index: int) -> Decision:
    """The move once undo stage ``index`` has nothing left to undo."""
    if index > 0:
        return MOVES["undone"]
    if run.cancel_reason is not None:
        return MOVES["finish_cancelled"]
    return MOVES["finish_compensated" if run.compensated_any else "finish_failed"]
