"""Fan-outs (``for_each``): their list, their items, their outcome, their undo.

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

from collections.abc import Mapping
from typing import Any

from concordia.definitions.models import ActionStep
from concordia.errors import EventError, ExpressionError, ValueLimitError
from concordia.runtime.attempts import (
    begin_attempt,
    begin_compensation,
    compensation_failed,
    compensation_succeeded,
    stop_error,
)
from concordia.runtime.context import ItemCompensationContext, ItemContext, Results
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow, call
from concordia.runtime.invoke import Outcome
from concordia.runtime.items import items_of
from concordia.runtime.kinds.base import Carry, OnJournal, Stop
from concordia.runtime.pending import journal_clone, journal_value
from concordia.runtime.planner import retry_policy
from concordia.runtime.run_pass import RunPass
from concordia.status import Kind, StepStatus
from concordia.store.records import ItemRecord

MAX_ITEMS = 10_000  # a fan-out's list; each item is a journaled record of its own


class FanOuts(OnJournal):
    """Fan-out steps (see the module docstring)."""

    def carries(self) -> Mapping[DecisionKind, Carry]:
        return {DecisionKind.EXPAND: self.expand, DecisionKind.ITEMS: self.start_items,
                DecisionKind.SETTLE: self.settle, DecisionKind.UNDO_ITEM: self.undo_item}

    # -- the list ------------------------------------------------------------------------

    def expand(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        for name in decision.steps:
            self._expand(p, name, now)
        return None
        yield  # a flow, though it asks for nothing

    def _expand(self, p: RunPass, name: str, now: float) -> None:
        step = p.compiled.steps[name]
        assert isinstance(step, ActionStep)
        assert step.for_each is not None
        rec = p.steps[name]
        rec.attempt = max(rec.attempt, 1)
        rec.started_at = now
        try:
            value = self.j.judge.items(name, step.for_each, p.run, p.results)
            if not isinstance(value, list):
                raise ExpressionError(step.for_each, f"gives {type(value).__name__}, not a "
                                                     "list: for_each needs a list")
            if len(value) > MAX_ITEMS:
                raise ExpressionError(step.for_each, f"gives {len(value)} items; a fan-out "
                                                     f"takes at most {MAX_ITEMS}")
            items = journal_value(value, f"the items of step {name}")
        except (ExpressionError, ValueLimitError) as exc:
            self.j.fail(p, step, rec, exc, now, retry=False)
            return
        rec.items = items
        rec.status = StepStatus.RUNNING
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_EXPANDED, name, rec.attempt, items=len(items))

    # -- the items -----------------------------------------------------------------------

    def start_items(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        j = self.j
        started: list[tuple[ActionStep, ItemRecord]] = []
        for key in decision.items:
            step = p.compiled.steps[key[0]]
            assert isinstance(step, ActionStep)
            item = p.items.get(key)
            if item is None:
                item = p.items[key] = ItemRecord(*key)
            begin_attempt(p.pending, item, now)
            started.append((step, item))
        # The starts are durable and the lease ours before any item's side effect; a
        # cancellation that came meanwhile comes back with this commit.
        if (yield from j.flush(p, final=False)):
            return None
        calls = [j.invocation(p, step, j.registry.get_action(step.action),
                              self._context(p, step, item)) for step, item in started]
        spans = j.tracer.calls_started(p.run, [(i.name, i.attempt) for _, i in started])
        done = yield from call(calls)
        j.tracer.calls_ended(spans, done)
        now = j.clock.now()
        stop: Stop = None
        for (step, item), outcome in zip(started, done, strict=True):
            self._record(p, step, item, outcome, now)
            if outcome.stop:
                stop = stop_error(outcome, p.run.id, item.name)
        for parent in {step.name for step, _ in started}:
            _count_done(p, parent)
        return stop

    def _context(self, p: RunPass, step: ActionStep, item: ItemRecord) -> ItemContext:
        run = p.run
        values = p.steps[step.name].items or []
        return ItemContext(run.id, run.saga, step.name, item.attempt, run.input,
                           Results(dict(p.results)), run.correlation_id, run.cause,
                           f"{run.id}:{step.name}:{item.index}",
                           self.j.checkpoints(run.id, item, item.key),
                           journal_clone(item.checkpoint),
                           item=values[item.index], index=item.index, name=step.as_)

    def _record(self, p: RunPass, step: ActionStep, item: ItemRecord, outcome: Outcome,
                now: float) -> None:
        p.pending.touch(item)
        if outcome.ok:
            try:
                item.result = journal_value(
                    outcome.value, f"the result of item {item.index} of step {step.name}")
            except ValueLimitError as exc:
                self._failed(p, step, item, exc, now, retry=False)
                return
            item.status = StepStatus.SUCCEEDED
            item.error = item.error_detail = None
            item.finished_at = now
            p.pending.note(now, Kind.STEP_SUCCEEDED, item.name, item.attempt,
                           result=item.result)
            return
        assert outcome.error is not None
        self._failed(p, step, item, outcome.error, now)

    def _failed(self, p: RunPass, step: ActionStep, item: ItemRecord, error: BaseException,
                now: float, *, retry: bool = True) -> None:
        """Journal an item's failed attempt: retry on a timer, or fail it for good."""
        self.j.fail(p, step, item, error, now, retry=retry,
                    key=f"{p.run.id}:{step.name}:{item.index}")

    # -- the step's outcome --------------------------------------------------------------

    def settle(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        j = self.j
        name = decision.steps[0]
        step = p.compiled.steps[name]
        assert isinstance(step, ActionStep)
        rec = p.steps[name]
        j.abandon_items(p, name)
        rec.finished_at = now
        if not decision.failed:
            results: list[Any] = []
            for item in items_of(rec, p.items):
                if item.status == StepStatus.SUCCEEDED:
                    results.append(item.result)
                else:  # best_effort: it failed (and was undone if it needed to be)
                    results.append({"error": item.error_detail})
            try:
                rec.result = journal_value(results, f"the result of step {name}")
                j.succeed(p, step, rec, now)
            except (ValueLimitError, EventError, ExpressionError) as exc:
                rec.result = None
                j.fail(p, step, rec, exc, now, retry=False)
            return None
        failing = p.items[decision.items[0]]
        rec.status = StepStatus.FAILED
        rec.error = f"item {failing.index}: {failing.error}"
        rec.error_detail = failing.error_detail
        rec.caught = failing.caught if failing.status == StepStatus.FAILED and (
            failing.comp_status is None) else None
        if rec.caught is None:
            p.run.error = f"step {name}: {rec.error}"
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_FAILED, name, rec.attempt, error=rec.error,
                       item=failing.index)
        return None
        yield  # a flow, though it asks for nothing

    # -- undo ----------------------------------------------------------------------------

    def undo_item(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        j = self.j
        run, pending = p.run, p.pending
        item = p.items[decision.items[0]]
        step = p.compiled.steps[item.step]
        assert isinstance(step, ActionStep)
        assert step.compensate is not None
        begin_compensation(pending, item, now)
        yield from j.flush(p, final=False)
        completed = item.status == StepStatus.SUCCEEDED
        key = f"{run.id}:{step.name}:{item.index}:compensate"
        ctx = ItemCompensationContext(
            run.id, run.saga, step.name, item.comp_attempt, run.input,
            Results(dict(p.results)), run.correlation_id, run.cause, key,
            item.result if completed else item.checkpoint, completed,
            journal_clone(item.checkpoint), item=(p.steps[step.name].items or [])[item.index],
            index=item.index, name=step.as_)
        invocation = j.invocation(p, step, j.registry.get_compensation(step.compensate), ctx)
        spans = j.tracer.calls_started(run, [(item.name, item.comp_attempt)],
                                       compensation=True)
        outcome = (yield from call([invocation]))[0]
        j.tracer.calls_ended(spans, [outcome])
        now = j.clock.now()
        pending.touch(item)
        if outcome.ok:
            compensation_succeeded(run, item, pending, now)
            return None
        return compensation_failed(run, item, item.name, outcome,
                                   retry_policy(p.compiled.saga, step, compensation=True),
                                   key, pending, now)


def _count_done(p: RunPass, name: str) -> None:
    """Move the fan-out's planning hint past its first items that succeeded."""
    parent = p.steps[name]
    count, done = len(parent.items or ()), parent.done_items
    while done < count and (item := p.items.get((name, done))) is not None and (
            item.status == StepStatus.SUCCEEDED):
        done += 1
    parent.done_items = done
