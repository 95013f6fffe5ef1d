"""The properties ``prove`` checks, on each path's end: pure functions of the saga, the
journal the path left and the world's ledger (the calls, the effects that landed).

1. No silent leftovers: an effect that may have landed is, at the end, compensated, or
   declared (``compensate: none`` with a reason), or part of a completed run that
   journaled it, or the run ends ``compensation_failed`` (visible, resumable).
2. Order: compensations undo effects in reverse (earlier stages last, a fan-out's items
   last index first), each effect at most once.
3. Termination: the run ends (an await that says ``timeout: none`` may wait forever, on
   purpose); a saga's ``max_duration`` holds on every path.
4. Deadlines: every await has a timeout, or says ``timeout: none``.
5. Events and reads: every event emitted is in the taxonomy, and every expression reads
   only results that exist on the path (checked as they are evaluated, by the judge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from concordia.definitions.models import ActionStep, AwaitStep, Saga
from concordia.explore.model import (
    Call,
    Effect,
    Ending,
    Leftover,
    LeftoverKind,
    Property,
    Violation,
)
from concordia.status import CompStatus, RunStatus
from concordia.store.records import ItemRecord, Loaded, StepRecord


def leftovers(saga: Saga, loaded: Loaded, effects: Sequence[Effect], status: str
              ) -> list[Leftover]:
    """The effects still in place at the end of a path, and why (see property 1)."""
    out: list[Leftover] = []
    completed = status == RunStatus.COMPLETED
    halted = status in (RunStatus.COMPENSATION_FAILED, RunStatus.STUCK)
    for effect in effects:
        rec = _record(loaded, effect)
        if rec is not None and rec.comp_status == CompStatus.SUCCEEDED:
            continue
        recorded = rec is not None and rec.has_effect
        if completed and recorded:
            continue  # part of the run's outcome, and journaled
        step = saga.step(effect.step)
        if isinstance(step, ActionStep) and step.compensate_none:
            out.append(Leftover(effect.step, effect.index, LeftoverKind.DECLARED, step.reason))
        elif halted:
            out.append(Leftover(effect.step, effect.index, LeftoverKind.HALTED))
        elif not recorded:
            out.append(Leftover(effect.step, effect.index, LeftoverKind.UNRECORDED))
        else:
            out.append(Leftover(effect.step, effect.index, LeftoverKind.UNCOMPENSATED))
    return out


def _record(loaded: Loaded, effect: Effect) -> StepRecord | ItemRecord | None:
    if effect.index is None:
        return loaded.steps.get(effect.step)
    return loaded.items.get((effect.step, effect.index))


def leftover_violations(saga: Saga, found: Sequence[Leftover], status: str) -> list[Violation]:
    """Property 1: the leftovers nobody undid or declared."""
    out: list[Violation] = []
    for lo in found:
        if lo.accepted:
            continue
        step = saga.step(lo.step)
        declared = isinstance(step, ActionStep) and step.checkpoints
        if lo.kind == LeftoverKind.UNRECORDED:
            if declared:
                hint = (f"step {lo.step} declares `checkpoints: true`: its handler must call "
                        "ctx.checkpoint before the effect")
            else:
                hint = (f"checkpoint before the effect in {lo.step}'s handler "
                        "(ctx.checkpoint) and declare `checkpoints: true`, so a failure "
                        "after the effect is compensated")
            message = (f"the effect of {lo.name} landed but the journal never learned of "
                       f"it; the run ends {status} with it in place")
        else:
            hint = f"give {lo.step} a compensation, or `compensate: none` with a reason"
            message = f"the effect of {lo.name} is in place at the end ({status})"
        # One breach a step (a fan-out's items are one: the same fix for each).
        out.append(Violation(Property.LEFTOVERS, f"leftover {lo.step}", message, hint,
                             lo.step))
    return out


def order_violations(stage_of: Mapping[str, int], calls: Sequence[Call]) -> list[Violation]:
    """Property 2: compensations in reverse order of their effects (``stage_of``: each
    step's stage), each at most once."""
    undone: list[tuple[str, int | None]] = []
    out: list[Violation] = []
    counts: dict[tuple[str, int | None], int] = {}
    for call in calls:
        if call.phase != "compensation" or call.outcome != "ok":
            continue
        key = (call.step, call.index)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == 2:
            out.append(Violation(Property.ORDER, f"twice {call.name}",
                                 f"the effect of {call.name} is compensated twice",
                                 "the engine undoes each effect once: report this",
                                 call.step))
        if call.undoing:
            undone.append(key)
    # Each compensation must undo an effect that came no later than every effect undone
    # before it: no later stage, and within a fan-out no later item. One pass, keeping
    # the earliest stage (and, per fan-out, the lowest item) undone so far.
    earliest: tuple[int, str] | None = None
    lowest: dict[str, tuple[int, str]] = {}
    for step, index in undone:
        name = step if index is None else f"{step}[{index}]"
        stage = stage_of[step]
        if earliest is not None and stage > earliest[0]:
            out.append(_out_of_order(earliest[1], name, step))
        elif index is not None and step in lowest and index > lowest[step][0]:
            out.append(_out_of_order(lowest[step][1], name, step))
        if earliest is None or stage < earliest[0]:
            earliest = (stage, name)
        if index is not None and (step not in lowest or index < lowest[step][0]):
            lowest[step] = (index, name)
    return out


def _out_of_order(first: str, second: str, step: str) -> Violation:
    return Violation(Property.ORDER, f"order {first} {second}",
                     f"{second} is compensated after {first}, though its effect came later",
                     "the engine undoes in reverse: report this", step)


def termination_violations(saga: Saga, ending: Ending | None, waits_at: str | None,
                           duration: float, unbounded_at: str | None = None
                           ) -> list[Violation]:
    """Property 3: the run ends, and within ``max_duration``."""
    out: list[Violation] = []
    if ending == Ending.NO_END:
        out.append(Violation(Property.TERMINATION, "no end",
                             "the run stops short of an end, with nothing to move it on",
                             "report this, with the path", None))
    limit = saga.max_duration
    if limit is not None and duration > limit:
        if math.isinf(duration):
            at = waits_at or unbounded_at
            what = (f"it may wait without end at {at} (`timeout: none`)" if at else
                    "a wait on it has no bound")
        else:
            what = f"its worst case is {format_seconds(duration)}"
        out.append(Violation(Property.TERMINATION, "max_duration",
                             f"{what}, over max_duration {format_seconds(limit)}",
                             "shorten timeouts or retries, or raise max_duration",
                             waits_at or unbounded_at))
    return out


def deadline_violations(saga: Saga) -> list[Violation]:
    """Property 4: every await has a deadline, or says it has none."""
    return [Violation(Property.DEADLINES, f"deadline {step.name}",
                      f"await {step.name} has no timeout and does not say `timeout: none`",
                      "add `timeout:` (and `on_timeout:`), or `timeout: none` if it may "
                      "wait forever", step.name)
            for step in saga.steps
            if isinstance(step, AwaitStep) and step.timeout is None and not step.timeout_none]


def format_seconds(seconds: float) -> str:
    """A duration for people: ``1h 2m 3.5s``; ``unbounded`` for infinity."""
    if math.isinf(seconds):
        return "unbounded"
    parts: list[str] = []
    rest = seconds
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if rest >= size:
            whole = int(rest // size)
            parts.append(f"{whole}{unit}")
            rest -= whole * size
    if rest > 1e-9 or not parts:
        parts.append(f"{rest:.3g}s")
    return " ".join(parts)
