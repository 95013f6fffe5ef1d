"""Carrying out a fan-out (``for_each``): its list, its items, its outcome, its undo.

The planner (:mod:`concordia.runtime.stage_plan`) decides; this module does:

- ``expand``: evaluate the step's list once and journal it on the step's record (a list
  of at most :data:`MAX_ITEMS` JSON values within the value limits; anything else fails
  the step, without retry: it would fail again);
- ``items``: start these items (their start durable before any handler runs, as for a
  step), call the handler once per item, concurrently, and journal each outcome: a
  result, a retry on a timer (the step's retry policy, seeded by the item's key), or a
  failure for good (with the catch entry that takes it, if any);
- ``settle``: the step's own outcome: the list of the items' results (a failed item's
  entry in ``best_effort`` is ``{"error": ...}``), or the failing item's error;
- ``undo_item``: call the compensation for one item, with that item's result (or
  checkpoint), retried by the step's compensation retry policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from concordia.definitions.models import ActionStep
from concordia.errors import EventError, ExpressionError, ValueLimitError
from concordia.runtime.attempts import (
    begin_attempt,
    begin_compensation,
    compensation_failed,
    compensation_succeeded,
    failed_attempt,
    stop_error,
)
from concordia.runtime.context import ItemCompensationContext, ItemContext, Results
from concordia.runtime.decision import Decision
from concordia.runtime.effects import Call, Flow, outcomes
from concordia.runtime.emitter import evaluate
from concordia.runtime.invoke import HandlerStopError, Outcome
from concordia.runtime.items import item_names, split_item
from concordia.runtime.pending import journal_value
from concordia.runtime.planner import retry_policy
from concordia.status import Kind, StepStatus
from concordia.store.records import StepRecord

if TYPE_CHECKING:
    from concordia.runtime.executor import Executor, RunPass

_log = structlog.get_logger("concordia.engine")
MAX_ITEMS = 10_000  # a fan-out's list; each item is a journaled record of its own
_OPEN = frozenset({StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING_RETRY})


class FanOut:
    """The fan-out operations of one executor."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    # -- the list ------------------------------------------------------------------------

    def expand(self, p: RunPass, name: str, now: float) -> None:
        ex = self.executor
        step = p.compiled.steps[name]
        assert isinstance(step, ActionStep)
        assert step.for_each is not None
        rec = p.steps[name]
        rec.attempt = max(rec.attempt, 1)
        rec.started_at = now
        try:
            value = evaluate(step.for_each, p.run, p.results)
            if not isinstance(value, list):
                raise ExpressionError(step.for_each, f"gives {type(value).__name__}, not a "
                                                     "list: for_each needs a list")
            if len(value) > MAX_ITEMS:
                raise ExpressionError(step.for_each, f"gives {len(value)} items; a fan-out "
                                                     f"takes at most {MAX_ITEMS}")
            items = journal_value(value, f"the items of step {name}")
        except (ExpressionError, ValueLimitError) as exc:
            ex._fail(p, step, rec, exc, now, retry=False)
            return
        rec.items = items
        rec.status = StepStatus.RUNNING
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_EXPANDED, name, rec.attempt, items=len(items))

    # -- the items -----------------------------------------------------------------------

    def start_items(self, p: RunPass, names: tuple[str, ...], now: float
                    ) -> Flow[HandlerStopError | None]:
        ex = self.executor
        pending = p.pending
        started: list[tuple[ActionStep, int, StepRecord]] = []
        for name in names:
            parent, index = _split(name)
            step = p.compiled.steps[parent]
            assert isinstance(step, ActionStep)
            rec = p.steps.get(name)
            if rec is None:
                rec = p.steps[name] = StepRecord(name)
            begin_attempt(pending, rec, now)
            started.append((step, index, rec))
        # The starts are durable and the lease ours before any item's side effect; a
        # cancellation that came meanwhile comes back with this commit.
        if (yield from ex._flush(p, final=False)):
            return None
        calls = [ex._invocation(p, step, ex.registry.get_action(step.action),
                                self._context(p, step, index, rec))
                 for step, index, rec in started]
        spans = ex.tracer.calls_started(p.run, [(r.name, r.attempt) for _, _, r in started])
        done = outcomes((yield Call(calls)))
        ex.tracer.calls_ended(spans, done)
        now = ex.clock.now()
        stop: HandlerStopError | None = None
        for (step, index, rec), outcome in zip(started, done, strict=True):
            self._record(p, step, index, rec, outcome, now)
            if outcome.stop:
                stop = stop_error(outcome, p.run.id, rec.name)
        for parent in {step.name for step, _, _ in started}:
            _count_done(p, parent)
        return stop

    def _context(self, p: RunPass, step: ActionStep, index: int, rec: StepRecord
                 ) -> ItemContext:
        from concordia.runtime.executor import _Checkpoints, journal_clone

        run = p.run
        parent = p.steps[step.name]
        return ItemContext(run.id, run.saga, step.name, rec.attempt, run.input,
                           Results(dict(p.results)), run.correlation_id, run.cause,
                           f"{run.id}:{step.name}:{index}", _Checkpoints(self.executor, run.id,
                                                                          rec),
                           journal_clone(rec.checkpoint), item=(parent.items or [])[index],
                           index=index, name=step.as_)

    def _record(self, p: RunPass, step: ActionStep, index: int, rec: StepRecord,
                outcome: Outcome, now: float) -> None:
        p.pending.touch(rec)
        if outcome.ok:
            try:
                rec.result = journal_value(outcome.value,
                                           f"the result of item {index} of step {step.name}")
            except ValueLimitError as exc:
                self._failed(p, step, index, rec, exc, now, retry=False)
                return
            rec.status = StepStatus.SUCCEEDED
            rec.error = rec.error_detail = None
            rec.finished_at = now
            p.pending.note(now, Kind.STEP_SUCCEEDED, rec.name, rec.attempt, result=rec.result)
            return
        assert outcome.error is not None
        self._failed(p, step, index, rec, outcome.error, now)

    def _failed(self, p: RunPass, step: ActionStep, index: int, rec: StepRecord,
                error: BaseException, now: float, *, retry: bool = True) -> None:
        """Journal an item's failed attempt: retry on a timer, or fail it for good."""
        failed_attempt(p.pending, p.compiled.saga, step, rec, error, now,
                       key=f"{p.run.id}:{step.name}:{index}", retry=retry, catch=step.catch)

    # -- the step's outcome --------------------------------------------------------------

    def settle(self, p: RunPass, decision: Decision, now: float) -> None:
        ex = self.executor
        name = decision.steps[0]
        step = p.compiled.steps[name]
        assert isinstance(step, ActionStep)
        rec = p.steps[name]
        self.abandon_items(p, name)
        rec.finished_at = now
        if decision.event == "succeeded":
            results: list[Any] = []
            for item in self._records(p, name):
                if item.status == StepStatus.SUCCEEDED:
                    results.append(item.result)
                else:  # best_effort: it failed (and was undone if it needed to be)
                    results.append({"error": item.error_detail})
            try:
                rec.result = journal_value(results, f"the result of step {name}")
                ex._succeed(p, step, rec, now)
            except (ValueLimitError, EventError, ExpressionError) as exc:
                rec.result = None
                ex._fail(p, step, rec, exc, now, retry=False)
            return
        failing = p.steps[decision.steps[1]]
        _, index = _split(failing.name)
        rec.status = StepStatus.FAILED
        rec.error = f"item {index}: {failing.error}"
        rec.error_detail = failing.error_detail
        rec.caught = failing.caught if failing.status == StepStatus.FAILED and (
            failing.comp_status is None) else None
        if rec.caught is None:
            p.run.error = f"step {name}: {rec.error}"
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_FAILED, name, rec.attempt, error=rec.error, item=index)

    def abandon_items(self, p: RunPass, name: str) -> None:
        """Stop a fan-out's open items: no new attempt, no timer (items never started have
        no record, and get none)."""
        steps = p.steps
        for item_name_ in item_names(name, len(steps[name].items or ())):
            item = steps.get(item_name_)
            if item is not None and item.status in _OPEN:
                item.status = StepStatus.ABANDONED
                item.wake_at = None
                p.pending.touch(item)

    @staticmethod
    def _records(p: RunPass, name: str) -> list[StepRecord]:
        steps = p.steps
        return [steps.get(n) or StepRecord(n)
                for n in item_names(name, len(p.steps[name].items or ()))]

    # -- undo ----------------------------------------------------------------------------

    def undo_item(self, p: RunPass, name: str, now: float) -> Flow[HandlerStopError | None]:
        ex = self.executor
        run, pending = p.run, p.pending
        parent, index = _split(name)
        step = p.compiled.steps[parent]
        assert isinstance(step, ActionStep)
        assert step.compensate is not None
        rec = p.steps[name]
        begin_compensation(pending, rec, now)
        yield from ex._flush(p, final=False)
        from concordia.runtime.executor import journal_clone

        completed = rec.status == StepStatus.SUCCEEDED
        key = f"{run.id}:{parent}:{index}:compensate"
        ctx = ItemCompensationContext(
            run.id, run.saga, parent, rec.comp_attempt, run.input, Results(dict(p.results)),
            run.correlation_id, run.cause, key, rec.result if completed else rec.checkpoint,
            completed, journal_clone(rec.checkpoint), item=(p.steps[parent].items or [])[index],
            index=index, name=step.as_)
        call = ex._invocation(p, step, ex.registry.get_compensation(step.compensate), ctx)
        spans = ex.tracer.calls_started(run, [(name, rec.comp_attempt)], compensation=True)
        outcome = outcomes((yield Call([call])))[0]
        ex.tracer.calls_ended(spans, [outcome])
        now = ex.clock.now()
        pending.touch(rec)
        if outcome.ok:
            compensation_succeeded(run, rec, pending, now)
            return None
        return compensation_failed(run, rec, name, outcome,
                                   retry_policy(p.compiled.saga, step, compensation=True),
                                   key, pending, now)


def _count_done(p: RunPass, name: str) -> None:
    """Move the fan-out's planning hint past its first items that succeeded."""
    parent = p.steps[name]
    names = item_names(name, len(parent.items or ()))
    done, steps = parent.done_items, p.steps
    while done < len(names) and (item := steps.get(names[done])) is not None and (
            item.status == StepStatus.SUCCEEDED):
        done += 1
    parent.done_items = done


def _split(name: str) -> tuple[str, int]:
    split = split_item(name)
    assert split is not None, name
    return split


__all__ = ["MAX_ITEMS", "FanOut"]
