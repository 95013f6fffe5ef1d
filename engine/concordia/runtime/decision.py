"""What the planner decides for a run: one :class:`Decision`, carried out by the executor.

The kinds (the planner's module docstring says when each is taken):

- ``start``, ``compensate``, ``move``, ``wait``, ``end``: the core of every saga;
- ``check``: evaluate the conditions (``if``) of these steps;
- ``catch``: a catch entry took this failed step's error: journal it caught;
- ``expand``: evaluate this fan-out's list; ``items``: start these items;
  ``settle``: the fan-out is over (``failed``: because of the item in ``items``);
  ``undo_item``: compensate this item;
- ``child``: start this child saga, or look at it after its end woke the run;
  ``undo_child``: compensate this child saga (ask it to undo, or look at it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from concordia.machine.compile import Move, MoveKind
from concordia.store.records import ItemKey, RunRecord


class DecisionKind(StrEnum):
    """What a decision asks for."""

    START = "start"
    COMPENSATE = "compensate"
    MOVE = "move"
    WAIT = "wait"
    END = "end"
    CHECK = "check"
    CATCH = "catch"
    EXPAND = "expand"
    ITEMS = "items"
    SETTLE = "settle"
    UNDO_ITEM = "undo_item"
    CHILD = "child"
    UNDO_CHILD = "undo_child"


@dataclass(slots=True)
class Decision:
    """What to do next for one run (not frozen: one is made for most passes, and a frozen
    dataclass pays a call per field to be built; nothing changes one once made)."""

    kind: DecisionKind
    steps: tuple[str, ...] = ()
    items: tuple[ItemKey, ...] = ()
    move: Move | None = None
    wake_at: float | None = None
    suspended: bool = False
    failed: bool = False  # a fan-out settles failed (its failing item in ``items``)


END = Decision(DecisionKind.END)
# The moves that name no stage, each decided once.
MOVES: dict[MoveKind, Decision] = {kind: Decision(DecisionKind.MOVE, move=Move(kind))
                                   for kind in MoveKind
                                   if kind not in (MoveKind.GOTO, MoveKind.RESUME)}


def move_to(kind: MoveKind, stage: int | None = None) -> Decision:
    """The decision to take a move of the machine (``stage`` for a jump)."""
    return MOVES[kind] if stage is None else Decision(DecisionKind.MOVE, move=Move(kind, stage))


def undo_finished(run: RunRecord, index: int) -> Decision:
    """The move once undo stage ``index`` has nothing left to undo."""
    if index > 0:
        return MOVES[MoveKind.UNDONE]
    if run.cancel_reason is not None:
        return MOVES[MoveKind.FINISH_CANCELLED]
    return MOVES[MoveKind.FINISH_COMPENSATED if run.compensated_any
                 else MoveKind.FINISH_FAILED]
