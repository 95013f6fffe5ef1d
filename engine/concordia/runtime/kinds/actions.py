"""Action steps: start attempts, call their handlers, journal the outcome; compensate.

An attempt's start is written (holding the run's lease) before its handler runs, so
"started" is durable before the side effect, and the steps of one stage are called
together. A result is checked as a journaled value; a step whose events cannot be made
after its handler succeeded keeps the result as a checkpoint (its effect happened) and
fails, so it is compensated. A compensation runs with the step's result (or its last
checkpoint), retried by the step's compensation policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from concordia.definitions.models import ActionStep
from concordia.errors import EventError, ExpressionError, ValueLimitError
from concordia.runtime.attempts import (
    begin_attempt,
    begin_compensation,
    compensation_failed,
    compensation_succeeded,
    stop_error,
)
from concordia.runtime.context import CompensationContext, Results, StepContext
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Call, Flow, call, outcomes_of
from concordia.runtime.invoke import Outcome
from concordia.runtime.kinds.base import Carry, OnJournal, Stop, steps_of
from concordia.runtime.pending import journal_clone, journal_value
from concordia.runtime.planner import retry_policy
from concordia.runtime.run_pass import RunPass
from concordia.status import Kind, StepStatus
from concordia.store.records import StepRecord

_log = structlog.get_logger("concordia.engine")
# A creating commit's lease lets its engine skip the claim commit only with this much
# of the lease left, so that another worker can never take the run over mid-call.
FRESH_MARGIN = 5.0


class Actions(OnJournal):
    """Action steps (see the module docstring)."""

    batched = True

    def carries(self) -> Mapping[DecisionKind, Carry]:
        return {DecisionKind.COMPENSATE: self.compensate}

    def start(self, p: RunPass, names: Sequence[str], now: float) -> Flow[Stop]:
        j, run = self.j, p.run
        fresh = (run.rev == 1 and run.lease_owner == j.owner
                 and run.lease_expires is not None
                 and run.lease_expires - now > FRESH_MARGIN)
        actions = steps_of(p, names, ActionStep)
        for _, rec in actions:
            if fresh and rec.status == StepStatus.RUNNING and rec.attempt == 1:
                continue  # started, and leased to us, by the commit that created the run
            begin_attempt(p.pending, rec, now)
        # "started" is durable, the lease ours. A cancellation asked meanwhile (while
        # another worker held the run, say) comes back with this commit: no handler runs.
        if (p.pending.dirty or not fresh) and (yield from j.flush(p, final=False)):
            return None
        calls = [j.invocation(p, step, j.registry.get_action(step.action),
                              self._context(p, step, rec)) for step, rec in actions]
        spans = j.tracer.calls_started(run, [(s.name, r.attempt) for s, r in actions])
        done = outcomes_of((yield Call(calls)))
        j.tracer.calls_ended(spans, done)  # tracing
        now = j.clock.now()
        stop: Stop = None
        for (step, rec), outcome in zip(actions, done, strict=True):
            self._record(p, step, rec, outcome, now)
            if outcome.stop:
                stop = stop_error(outcome, run.id, step.name)
                _log.error("worker.stop_requested", run_id=run.id, step=step.name,
                           error=str(stop))
        return stop

    def _context(self, p: RunPass, step: ActionStep, rec: StepRecord) -> StepContext:
        run = p.run
        return StepContext(run.id, run.saga, step.name, rec.attempt, run.input,
                           Results(dict(p.results)), run.correlation_id, run.cause,
                           f"{run.id}:{step.name}", self.j.checkpoints(run.id, rec, step.name),
                           journal_clone(rec.checkpoint))

    def _record(self, p: RunPass, step: ActionStep, rec: StepRecord, outcome: Outcome,
                now: float) -> None:
        j = self.j
        p.pending.touch(rec)
        if not outcome.ok:
            assert outcome.error is not None
            j.fail(p, step, rec, outcome.error, now)
            return
        try:
            value = journal_value(outcome.value, f"the result of step {step.name}")
        except ValueLimitError as exc:
            j.fail(p, step, rec, exc, now, retry=False)
            return
        rec.result = value
        try:
            j.succeed(p, step, rec, now)
        except (EventError, ExpressionError) as exc:
            # The handler's effect happened: keep its result as a checkpoint so the step
            # is compensated, and fail it (nothing was published).
            rec.checkpoint = value
            rec.result = None
            j.fail(p, step, rec, exc, now, retry=False)

    # -- compensation --------------------------------------------------------------------

    def compensate(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        j = self.j
        run, compiled, pending = p.run, p.compiled, p.pending
        name = decision.steps[0]
        step = compiled.steps[name]
        assert isinstance(step, ActionStep)
        assert step.compensate is not None
        rec = p.steps[name]
        begin_compensation(pending, rec, now)
        yield from j.flush(p, final=False)
        completed = rec.status == StepStatus.SUCCEEDED
        key = f"{run.id}:{name}:compensate"
        ctx = CompensationContext(
            run.id, run.saga, name, rec.comp_attempt, run.input, Results(dict(p.results)),
            run.correlation_id, run.cause, key,
            rec.result if completed else rec.checkpoint, completed,
            journal_clone(rec.checkpoint))
        invocation = j.invocation(p, step, j.registry.get_compensation(step.compensate), ctx)
        spans = j.tracer.calls_started(run, [(name, rec.comp_attempt)], compensation=True)
        outcome = (yield from call([invocation]))[0]
        j.tracer.calls_ended(spans, [outcome])  # tracing
        now = j.clock.now()
        pending.touch(rec)
        if outcome.ok:
            compensation_succeeded(run, rec, pending, now)
            try:
                j.emitter.emit(run, p.results, step.emit_on_compensate, pending, now)
            except (EventError, ExpressionError) as exc:
                pending.note(now, Kind.COMPENSATION_EMIT_FAILED, name, error=str(exc))
            return None
        return compensation_failed(run, rec, name, outcome,
                                   retry_policy(compiled.saga, step, compensation=True),
                                   key, pending, now)
