"""Planning a stage whose steps use the language's constructs; pure, like the planner.

Forward, over the stage's steps:

- a failed step: ``fail`` (the stage fails, the run compensates), unless a catch entry
  took its error: ``catch`` (journal it caught; the run goes on);
- a step whose condition (``if``) has not been evaluated: ``check`` (all such at once);
- a fan-out whose list has not been evaluated: ``expand``; then its items (below);
- a child saga not started yet, or whose end (or deadline) woke the run: ``child``;
- any other step as on the plain path: ``start`` when ready, timers, awaits.

When every step is settled (succeeded, skipped or caught) the stage is ``done``, or it
jumps (``goto_<stage>``) to the earliest later step a catch entry of a caught step names.

A fan-out's items start in list order, at most ``concurrency`` at once (an item waiting
on its retry timer holds its place). In mode ``all`` the first item that fails for good
fails the step (``settle`` with ``failed``); no other item starts. In mode
``best_effort`` a failed item with an effect is compensated on its own (``undo_item``)
and the step succeeds once every item has ended; if that compensation fails for good,
the step fails. ``settle`` with ``succeeded`` when every item has ended.

Undo, in reverse order within the stage: a fan-out's items that completed or
checkpointed, last first (``undo_item``); a child saga that was started (``undo_child``,
again when its end wakes the run); other steps as on the plain path.
"""

from __future__ import annotations

from concordia.definitions.models import ActionStep, SagaStep
from concordia.machine.compile import CompiledSaga, MoveKind
from concordia.runtime.decision import MOVES, Decision, DecisionKind, move_to, undo_finished
from concordia.status import (
    NOT_STARTED,
    STARTABLE,
    STEP_DONE,
    TIMED_STEP,
    CompStatus,
    StepStatus,
)
from concordia.store.records import Attempted, ItemKey, ItemRecord, RunRecord, StepRecord


class _Waits:
    """The earliest timer among what a stage waits on, and whether it awaits an event."""

    __slots__ = ("suspended", "wake_at")

    def __init__(self) -> None:
        self.wake_at: float | None = None
        self.suspended = False

    def add(self, wake: float | None) -> None:
        if wake is not None and (self.wake_at is None or wake < self.wake_at):
            self.wake_at = wake

    def decision(self) -> Decision:
        return Decision(DecisionKind.WAIT, wake_at=self.wake_at, suspended=self.suspended)


def forward(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
            items: dict[ItemKey, ItemRecord], index: int, now: float) -> Decision:
    """The next decision for forward stage ``index`` (see the module docstring)."""
    if run.cancel_reason is not None:
        return MOVES[MoveKind.CANCEL]
    checks: list[str] = []
    ready: list[str] = []
    expand: list[str] = []
    children: list[str] = []
    caught: str | None = None
    fanned: Decision | None = None  # what a fan-out of the stage needs next
    jumps: list[int] = []
    waits = _Waits()
    done = True
    for name in compiled.stages[index]:
        rec = steps[name]
        status = rec.status
        step = compiled.steps[name]
        if status in STEP_DONE:
            if status == StepStatus.CAUGHT:
                jumps += _jump(compiled, step, rec)
            continue
        done = False
        if status == StepStatus.FAILED:
            if rec.caught is None:
                return MOVES[MoveKind.FAIL]
            caught = caught or name
        elif status == StepStatus.PENDING and step.if_ is not None:
            checks.append(name)
        elif name in compiled.fan_outs:
            if status in NOT_STARTED:
                expand.append(name)
            else:
                assert isinstance(step, ActionStep)
                decided = _items(step, rec, items, now, waits)
                if decided is None or (fanned is not None and fanned.kind != DecisionKind.ITEMS):
                    pass  # bookkeeping found first goes first
                elif fanned is not None and decided.kind == DecisionKind.ITEMS:
                    # Several fan-outs of a stage: their items run together.
                    fanned = Decision(DecisionKind.ITEMS, items=fanned.items + decided.items)
                else:
                    fanned = decided
        elif name in compiled.children:
            if status in NOT_STARTED or (rec.wake_at is not None and rec.wake_at <= now):
                children.append(name)
            else:
                waits.suspended = True
                waits.add(rec.wake_at)
        elif status in STARTABLE:
            ready.append(name)
        elif status in TIMED_STEP:
            if rec.wake_at is not None and rec.wake_at <= now:
                ready.append(name)
            else:
                waits.suspended |= status == StepStatus.AWAITING
                waits.add(rec.wake_at)
    if done:
        return move_to(MoveKind.GOTO, min(jumps)) if jumps else MOVES[MoveKind.DONE]
    if caught is not None:
        return Decision(DecisionKind.CATCH, steps=(caught,))
    if checks:
        return Decision(DecisionKind.CHECK, steps=tuple(checks))
    if fanned is not None and fanned.kind != DecisionKind.ITEMS:
        return fanned  # settle or undo an item: bookkeeping first
    if ready:
        return Decision(DecisionKind.START, steps=tuple(ready))
    if expand:
        return Decision(DecisionKind.EXPAND, steps=tuple(expand))
    if children:
        return Decision(DecisionKind.CHILD, steps=tuple(children))
    if fanned is not None:
        return fanned
    return waits.decision()


def _jump(compiled: CompiledSaga, step: object, rec: StepRecord) -> list[int]:
    """The stage a caught step's catch entry jumps to, if it names a step."""
    if (not isinstance(step, ActionStep | SagaStep) or rec.caught is None
            or rec.caught >= len(step.catch)):
        return []
    goto = step.catch[rec.caught].goto
    target = compiled.stage_of.get(goto)
    return [] if goto == "continue" or target is None else [target]


def _items(step: ActionStep, rec: StepRecord, items: dict[ItemKey, ItemRecord], now: float,
           waits: _Waits) -> Decision | None:
    """A fan-out's next decision, or None (its items wait: ``waits`` has their timers)."""
    name = step.name
    best_effort = step.mode == "best_effort"
    slots = step.concurrency
    start: list[ItemKey] = []
    ended = True
    for index in range(rec.done_items, len(rec.items or ())):  # see StepRecord.done_items
        item = items.get((name, index))
        if item is None:  # not started yet: items start in order, so none after it has
            ended = False
            if len(start) < slots:
                start.append((name, index))
                continue
            break
        status = item.status
        if status == StepStatus.SUCCEEDED:
            continue
        if status == StepStatus.FAILED:
            if not best_effort:
                return Decision(DecisionKind.SETTLE, steps=(name,), items=(item.key,), failed=True)
            # An item of a step that says `compensate: none` has nothing to undo.
            undo = _undo_item(item, now) if step.compensate is not None else None
            if undo is None:
                continue
            if undo.kind == DecisionKind.MOVE:  # its compensation failed for good: the step fails
                return Decision(DecisionKind.SETTLE, steps=(name,), items=(item.key,), failed=True)
            if undo.kind == DecisionKind.WAIT:
                ended = False
                slots -= 1
                waits.add(undo.wake_at)
                continue
            return undo
        ended = False
        if status == StepStatus.WAITING_RETRY and item.wake_at is not None and (
                item.wake_at > now):
            slots -= 1  # in progress: it holds its place
            waits.add(item.wake_at)
        elif len(start) < slots:
            start.append(item.key)  # pending, due for a retry, or interrupted by a crash
    if ended:
        return Decision(DecisionKind.SETTLE, steps=(name,))
    # Places taken by items found waiting after the first ones were picked.
    start = start[:max(slots, 0)]
    return Decision(DecisionKind.ITEMS, items=tuple(start)) if start else None


def _undo_item(item: ItemRecord, now: float) -> Decision | None:
    """Whether an item needs its compensation now (``undo_item``), later (``wait``), can
    never have it (``move`` stuck), or needs none (None)."""
    decided = undo_record(item, now)
    if decided is not None and decided.kind == DecisionKind.COMPENSATE:
        return Decision(DecisionKind.UNDO_ITEM, items=(item.key,))
    return decided


def undo_record(rec: Attempted, now: float) -> Decision | None:
    """Whether a step's or item's effect needs undoing now (``compensate``), later
    (``wait``), can never be undone (``move`` stuck), or needs nothing (None)."""
    if not rec.has_effect or rec.comp_status == CompStatus.SUCCEEDED:
        return None
    if rec.comp_status == CompStatus.FAILED:
        return MOVES[MoveKind.STUCK]
    if (rec.comp_status == CompStatus.WAITING_RETRY and rec.wake_at is not None
            and rec.wake_at > now):
        return Decision(DecisionKind.WAIT, wake_at=rec.wake_at)
    return Decision(DecisionKind.COMPENSATE, steps=(rec.step if isinstance(rec, ItemRecord)
                                            else rec.name,))


def needs_compensation(compiled: CompiledSaga, rec: StepRecord) -> bool:
    """A step is undone when it has a compensation and may have changed the world."""
    step = compiled.steps[rec.name]
    if type(step) is SagaStep:  # a child that was started may have done something
        return rec.checkpoint is not None and rec.comp_status != CompStatus.SUCCEEDED
    return (type(step) is ActionStep and step.compensate is not None
            and rec.has_effect and rec.comp_status != CompStatus.SUCCEEDED)


def undo(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
         items: dict[ItemKey, ItemRecord], index: int, now: float) -> Decision:
    """The next decision for undo stage ``index`` (see the module docstring)."""
    for name in reversed(compiled.stages[index]):
        rec = steps[name]
        step = compiled.steps[name]
        if name in compiled.fan_outs:
            if not (isinstance(step, ActionStep) and step.compensate is not None):
                continue  # `compensate: none`: its items have nothing to undo
            for i in reversed(range(len(rec.items or ()))):
                item = items.get((name, i))
                if item is not None and (decided := _undo_item(item, now)) is not None:
                    return decided
            continue
        if not needs_compensation(compiled, rec):
            continue
        if isinstance(step, SagaStep):
            if (rec.comp_status == CompStatus.AWAITING
                    and (rec.wake_at is None or rec.wake_at > now)):
                return Decision(DecisionKind.WAIT, wake_at=rec.wake_at, suspended=True)
            return Decision(DecisionKind.UNDO_CHILD, steps=(name,))
        decided = undo_record(rec, now)
        if decided is not None:
            return decided
    return undo_finished(run, index)
