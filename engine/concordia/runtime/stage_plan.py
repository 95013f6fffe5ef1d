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
from concordia.machine.compile import CompiledSaga
from concordia.runtime.decision import MOVES, Decision, undo_finished
from concordia.runtime.items import item_names
from concordia.status import CompStatus, StepStatus
from concordia.store.records import RunRecord, StepRecord

_SETTLED = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.CAUGHT})
_STARTABLE = frozenset({StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING})
_TIMED = frozenset({StepStatus.WAITING_RETRY, StepStatus.AWAITING})
_NOT_STARTED = frozenset({StepStatus.PENDING, StepStatus.READY})


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
        return Decision("wait", wake_at=self.wake_at, suspended=self.suspended)


def forward(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord], index: int,
            now: float) -> Decision:
    """The next decision for forward stage ``index`` (see the module docstring)."""
    if run.cancel_reason is not None:
        return MOVES["cancel"]
    checks: list[str] = []
    ready: list[str] = []
    expand: list[str] = []
    children: list[str] = []
    caught: str | None = None
    items: Decision | None = None
    jumps: list[int] = []
    waits = _Waits()
    done = True
    for name in compiled.stages[index]:
        rec = steps[name]
        status = rec.status
        step = compiled.steps[name]
        if status in _SETTLED:
            if status == StepStatus.CAUGHT:
                jumps += _jump(compiled, step, rec)
            continue
        done = False
        if status == StepStatus.FAILED:
            if rec.caught is None:
                return MOVES["fail"]
            caught = caught or name
        elif status == StepStatus.PENDING and step.if_ is not None:
            checks.append(name)
        elif name in compiled.fan_outs:
            if status in _NOT_STARTED:
                expand.append(name)
            else:
                assert isinstance(step, ActionStep)
                decided = _items(step, rec, steps, now, waits)
                if decided is None or (items is not None and items.kind != "items"):
                    pass  # bookkeeping found first goes first
                elif items is not None and decided.kind == "items":
                    # Several fan-outs of a stage: their items run together.
                    items = Decision("items", steps=items.steps + decided.steps)
                else:
                    items = decided
        elif name in compiled.children:
            if status in _NOT_STARTED or (rec.wake_at is not None and rec.wake_at <= now):
                children.append(name)
            else:
                waits.suspended = True
                waits.add(rec.wake_at)
        elif status in _STARTABLE:
            ready.append(name)
        elif status in _TIMED:
            if rec.wake_at is not None and rec.wake_at <= now:
                ready.append(name)
            else:
                waits.suspended |= status == StepStatus.AWAITING
                waits.add(rec.wake_at)
    if done:
        return Decision("move", event=f"goto_{min(jumps)}") if jumps else MOVES["done"]
    if caught is not None:
        return Decision("catch", steps=(caught,))
    if checks:
        return Decision("check", steps=tuple(checks))
    if items is not None and items.kind != "items":
        return items  # settle or undo an item: bookkeeping first
    if ready:
        return Decision("start", steps=tuple(ready))
    if expand:
        return Decision("expand", steps=tuple(expand))
    if children:
        return Decision("child", steps=tuple(children))
    if items is not None:
        return items
    return waits.decision()


def _jump(compiled: CompiledSaga, step: object, rec: StepRecord) -> list[int]:
    """The stage a caught step's catch entry jumps to, if it names a step."""
    if (not isinstance(step, ActionStep | SagaStep) or rec.caught is None
            or rec.caught >= len(step.catch)):
        return []
    goto = step.catch[rec.caught].goto
    target = compiled.stage_of.get(goto)
    return [] if goto == "continue" or target is None else [target]


def _items(step: ActionStep, rec: StepRecord, steps: dict[str, StepRecord], now: float,
           waits: _Waits) -> Decision | None:
    """A fan-out's next decision, or None (its items wait: ``waits`` has their timers)."""
    names = item_names(step.name, len(rec.items or ()))
    best_effort = step.mode == "best_effort"
    slots = step.concurrency
    start: list[str] = []
    ended = True
    for name in names[rec.done_items:]:  # the first ones succeeded (see StepRecord)
        item = steps.get(name)
        if item is None:  # not started yet: items start in order, so none after it has
            ended = False
            if len(start) < slots:
                start.append(name)
                continue
            break
        status = item.status
        if status == StepStatus.SUCCEEDED:
            continue
        if status == StepStatus.FAILED:
            if not best_effort:
                return Decision("settle", steps=(step.name, name), event="failed")
            undo = _undo_item(item, now)
            if undo is None:
                continue
            if undo.kind == "move":  # its compensation failed for good: the step fails
                return Decision("settle", steps=(step.name, name), event="failed")
            if undo.kind == "wait":
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
            start.append(name)  # pending, due for a retry, or interrupted by a crash
    if ended:
        return Decision("settle", steps=(step.name,), event="succeeded")
    # Places taken by items found waiting after the first ones were picked.
    start = start[:max(slots, 0)]
    return Decision("items", steps=tuple(start)) if start else None


def _undo_item(item: StepRecord, now: float) -> Decision | None:
    """Whether an item needs its compensation now (``undo_item``), later (``wait``), can
    never have it (``move`` stuck), or needs none (None)."""
    if not item.has_effect or item.comp_status == CompStatus.SUCCEEDED:
        return None
    if item.comp_status == CompStatus.FAILED:
        return MOVES["stuck"]
    if (item.comp_status == CompStatus.WAITING_RETRY and item.wake_at is not None
            and item.wake_at > now):
        return Decision("wait", wake_at=item.wake_at)
    return Decision("undo_item", steps=(item.name,))


def needs_compensation(compiled: CompiledSaga, rec: StepRecord) -> bool:
    """A step is undone when it has a compensation and may have changed the world."""
    step = compiled.steps[rec.name]
    if type(step) is SagaStep:  # a child that was started may have done something
        return rec.checkpoint is not None and rec.comp_status != CompStatus.SUCCEEDED
    return (type(step) is ActionStep and step.compensate is not None
            and rec.has_effect and rec.comp_status != CompStatus.SUCCEEDED)


def undo(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord], index: int,
         now: float) -> Decision:
    """The next decision for undo stage ``index`` (see the module docstring)."""
    for name in reversed(compiled.stages[index]):
        rec = steps[name]
        step = compiled.steps[name]
        if name in compiled.fan_outs:
            for item_name in reversed(item_names(name, len(rec.items or ()))):
                item = steps.get(item_name)
                if item is not None and (decided := _undo_item(item, now)) is not None:
                    return decided
            continue
        if not needs_compensation(compiled, rec):
            continue
        if isinstance(step, SagaStep):
            if (rec.comp_status == CompStatus.AWAITING
                    and (rec.wake_at is None or rec.wake_at > now)):
                return Decision("wait", wake_at=rec.wake_at, suspended=True)
            return Decision("undo_child", steps=(name,))
        decided = _undo_item(rec, now)
        if decided is not None and decided.kind == "undo_item":
            return Decision("compensate", steps=(name,))
        if decided is not None:
            return decided
    return undo_finished(run, index)
