"""The executor: carries the planner's decisions out for one run at a time.

Each operation is a flow (see :mod:`concordia.runtime.effects`): it reads the run, asks
:func:`~concordia.runtime.planner.plan` what to do, does it (starts steps, calls
handlers, evaluates policies, registers awaits, moves the compiled machine, compensates)
and accumulates the outcome in one pending commit. The commit is written before a
handler is called (so "started" is durable before the side effect, and the run's lease
is taken in it) and when the pass ends (the lease released); a step's result and the
next step's start therefore share one commit.

An error of the engine's own while advancing a run (an expression that cannot be
evaluated, a value the journal refuses) is contained by :meth:`Executor.contain`: it
fails the run's current steps with the error, so the run compensates, or, if even that
cannot be written, parks the run as ``stuck`` for an operator; the worker goes on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import (
    ActionStep,
    AwaitStep,
    PolicyStep,
    Saga,
    SagaStep,
    Step,
)
from concordia.errors import (
    ConcordiaError,
    EventError,
    ExpressionError,
    InputError,
    PolicyError,
    UnknownRunError,
    ValueLimitError,
)
from concordia.ids import new_id
from concordia.jsonvalidation import check, summarise
from concordia.machine.compile import CompiledSaga
from concordia.policies import evaluate_policy
from concordia.registry import Binding, Registry
from concordia.runtime.attempts import (
    begin_attempt,
    begin_compensation,
    compensation_failed,
    compensation_succeeded,
    failed_attempt,
    stop_error,
)
from concordia.runtime.book import SagaBook
from concordia.runtime.config import EngineConfig
from concordia.runtime.constructs import Constructs
from concordia.runtime.context import CompensationContext, Results, StepContext
from concordia.runtime.decision import CONSTRUCT_KINDS
from concordia.runtime.effects import Call, Flow, Read, Write, outcomes, publish_best_effort
from concordia.runtime.emitter import Emitter, evaluate, run_fields
from concordia.runtime.invoke import HandlerStopError, Invocation, Outcome, StepAbandonedError
from concordia.runtime.items import results_of, stage_index
from concordia.runtime.pending import Pending, describe, journal_value, json_clone, utc
from concordia.runtime.planner import plan, retry_policy
from concordia.runtime.views import MAX_ID, is_run_id
from concordia.status import (
    ACTIVE,
    END_KIND,
    FINAL,
    HALTED,
    CompStatus,
    Kind,
    RunStatus,
    StepStatus,
)
from concordia.store.base import ConflictError
from concordia.store.records import AwaitRecord, Commit, HistoryEntry, RunRecord, StepRecord
from concordia.tracing import make_tracer
from concordia.values import check_text, text_fault

_log = structlog.get_logger("concordia.engine")

# A creating commit's lease lets its engine skip the claim commit only with this much
# of the lease left, so that another worker can never take the run over mid-call.
_FRESH_MARGIN = 5.0
_RECENT = 10_000  # runs whose last written state an executor keeps
MAX_REASON = 4096  # characters of a cancellation's reason
_OPEN_STEP = (StepStatus.PENDING, StepStatus.WAITING_RETRY, StepStatus.AWAITING,
              StepStatus.RUNNING)


@dataclass(slots=True)
class RunPass:
    """One pass over one run: what was read, what is being written."""

    run: RunRecord
    steps: dict[str, StepRecord]
    compiled: CompiledSaga
    pending: Pending
    results: dict[str, Any]  # the succeeded steps' results, kept up to date
    writes: int = 0


@dataclass(frozen=True, slots=True)
class PassResult:
    """What a pass did: whether it wrote anything, and a handler's request to stop."""

    wrote: bool
    stop: HandlerStopError | None = None


_NOTHING = PassResult(False)


def with_defaults(compiled: CompiledSaga, stored: dict[str, StepRecord]
                  ) -> dict[str, StepRecord]:
    """Every step's record: a store keeps only the steps a run has touched (and a
    fan-out's items, kept beside the steps)."""
    if not compiled.fan_outs:
        if len(stored) == len(compiled.steps):
            return stored
        return {name: stored.get(name) or StepRecord(name) for name in compiled.steps}
    steps = {name: stored.get(name) or StepRecord(name) for name in compiled.steps}
    steps.update((name, rec) for name, rec in stored.items() if name not in steps)
    return steps


class Executor:
    """Carries decisions out; shared by the sync and async engines (see the docstring)."""

    def __init__(self, book: SagaBook, catalog: Catalog, registry: Registry, clock: Clock,
                 config: EngineConfig) -> None:
        self.book = book
        self.catalog = catalog
        self.registry = registry
        self.clock = clock
        self.config = config
        self.owner = config.owner
        self.emitter = Emitter(catalog, config.source)
        # Tracing (concordia.tracing): spans at run, attempt and compensation boundaries.
        self.tracer = make_tracer()
        self.emitter.traceparent_of = self.tracer.traceparent
        # The state of runs this executor wrote last (their records after its commit),
        # taken instead of a read when it advances them next. Optimistic: if anyone else
        # moved a run meanwhile, the pass's first commit — always before any handler is
        # called — is refused, and the run is read again.
        self.recent: OrderedDict[str, tuple[RunRecord, dict[str, StepRecord]]] = OrderedDict()
        # Carries out the decisions of the language's constructs, with this executor's
        # primitives (flush, invocation, success, failure).
        self.constructs = Constructs(self)

    def remember(self, run: RunRecord, steps: dict[str, StepRecord]) -> None:
        """Keep ``run`` as this executor last wrote it (the records are handed over)."""
        recent = self.recent
        recent[run.id] = (run, steps)
        if len(recent) > _RECENT:
            recent.popitem(last=False)

    def forget(self, run_id: str) -> None:
        self.recent.pop(run_id, None)

    # -- creating runs ---------------------------------------------------------------------------

    def new_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                causation_id: str | None, *, run_id: str | None = None,
                trigger: str | None = None, claim: bool = True,
                traceparent: str | None = None) -> Commit:
        """The commit that creates a run (its input checked against the saga's schema).

        With ``claim`` the run is leased to this engine and its first actions are marked
        started: their start is durable before their side effects without a commit of its
        own (the engine's next pass runs them).
        """
        try:
            data = journal_value(data, f"the input of saga {saga.name}")
        except ValueLimitError as exc:
            raise InputError(saga.name, str(exc), exc.path or None) from None
        for name, value in (("correlation_id", correlation_id),
                            ("causation_id", causation_id), ("run_id", run_id)):
            if value is not None and (len(value) > MAX_ID or text_fault(value)):
                why = text_fault(value) or f"longer than {MAX_ID} characters"
                raise InputError(saga.name, f"{name}: {why}", name)
        errors = check(saga.input_schema, data)
        if errors:
            raise InputError(saga.name, summarise(errors), errors[0].field or None)
        now = self.clock.now()
        rid = run_id or new_id()
        compiled = self.book.of(saga.name, saga.version)
        run = RunRecord(id=rid, saga=saga.name, version=saga.version,
                        status=RunStatus.RUNNING, state=compiled.initial, input=data,
                        correlation_id=correlation_id or new_id(), causation_id=causation_id,
                        cause=causation_id or rid, created_at=now, updated_at=now)
        detail: dict[str, Any] = {"input": data, "correlation_id": run.correlation_id}
        if trigger:
            detail["trigger"] = trigger
        if traced := self.tracer.run_started(run, traceparent):
            detail["traceparent"] = traced  # tracing: every later span is the run's child
        history = [HistoryEntry(rid, now, Kind.RUN_STARTED, None, None, detail)]
        steps: list[StepRecord] = []
        if claim:
            run.lease_owner, run.lease_expires = self.owner, now + self.config.lease_ttl
            for name in compiled.stages[0]:
                if name in compiled.plain_actions:
                    steps.append(StepRecord(name, StepStatus.RUNNING, 1, started_at=now))
                    history.append(HistoryEntry(rid, now, Kind.STEP_STARTED, name, 1, {}))
        return Commit(run=run, steps=steps, history=history)

    # -- advancing a run -------------------------------------------------------------------------

    def advance(self, run_id: str, draining: Callable[[], bool] | None = None
                ) -> Flow[PassResult]:
        """Drive one run as far as it can go now.

        The result carries the :class:`HandlerStopError` of a handler that asked the worker
        to stop (its attempt is journaled as failed first). A run another worker holds a
        live lease on is left alone. With ``draining`` true the pass ends before it starts
        another step (the lease released), so a stopping worker finishes the step in hand.
        """
        loaded = self.recent.pop(run_id, None)
        # A run this executor last wrote as ended is read again: only another writer can
        # have moved it since (a parent reverting its completed child saga).
        if loaded is None or loaded[0].status not in ACTIVE:
            loaded = yield Read("load", run_id)
            if loaded is None:
                return _NOTHING
        run, stored = loaded
        now = self.clock.now()
        if run.status not in ACTIVE or run.leased_to_other(self.owner, now):
            return _NOTHING
        if self.tracer.needs(run):  # tracing: the run's trace, once per run and worker
            self.tracer.learn(run, (yield Read("history", run.id)))
        compiled = self.book.of(run.saga, run.version)
        steps = with_defaults(compiled, stored)
        p = RunPass(run, steps, compiled, Pending(run), results_of(steps))
        stop: HandlerStopError | None = None
        while True:
            now = self.clock.now()
            decision = plan(compiled, run, steps, now)
            kind = decision.kind
            if kind == "move":
                assert decision.event is not None
                self.move(p, decision.event, now)
                continue
            if (kind == "start" or kind == "compensate") and stop is None and (
                    draining is None or not draining()):
                if kind == "start":
                    stop = yield from self._start_steps(p, decision.steps, now)
                else:
                    stop = yield from self._compensate(p, decision.steps[0], now)
                continue
            if kind in CONSTRUCT_KINDS and stop is None and (draining is None
                                                             or not draining()):
                stop = yield from self.constructs.carry_out(p, decision, now)
                continue
            if kind == "wait":
                run.status = RunStatus.SUSPENDED if decision.suspended else RunStatus.WAITING
                run.wake_at = decision.wake_at
                p.pending.dirty = True
            if (yield from self._flush(p, final=True)) and stop is None:
                continue  # a cancellation arrived while this pass held the lease
            self.remember(run, steps)
            return PassResult(p.writes > 0, stop)

    def _flush(self, p: RunPass, *, final: bool) -> Flow[bool]:
        """Write the pending commit; return whether a cancellation arrived meanwhile.

        Every commit of a pass holds the run's lease; the last one releases it.
        """
        run = p.run
        if final:
            if run.lease_owner is not None:
                run.lease_owner = run.lease_expires = None
                p.pending.dirty = True
        else:
            run.lease_owner = self.owner
            run.lease_expires = self.clock.now() + self.config.lease_ttl
            # Worked on under a lease, the run is running: left 'waiting' or 'suspended'
            # with the timer that woke it, it would look due to every other worker.
            run.status = RunStatus.RUNNING
            run.wake_at = None
        if not p.pending.dirty:
            return False
        commit, transient = take_commit(p.pending, self.clock.now())
        had_cancel = run.cancel_reason is not None
        yield Write("commit", commit)
        p.writes += 1
        if transient:
            yield from publish_best_effort(transient)
        return run.cancel_reason is not None and not had_cancel

    # -- machine moves ---------------------------------------------------------------------------

    def move(self, p: RunPass, event: str, now: float) -> None:
        """Take ``event`` in the compiled machine (emitting and journaling what it implies)."""
        run, compiled, pending = p.run, p.compiled, p.pending
        source = run.state
        target = compiled.move(source, event)
        if target == RunStatus.COMPLETED and compiled.saga.on_complete:
            try:
                self.emitter.emit(run, p.results, compiled.saga.on_complete, pending, now)
            except (EventError, ExpressionError) as exc:
                run.error = f"on_complete: {exc}"
                pending.note(now, Kind.RUN_EMIT_FAILED, error=str(exc))
                event = "fail"
                target = compiled.move(source, event)
        if event == "cancel":
            run.error = f"cancelled: {run.cancel_reason}"
        if event in ("fail", "cancel"):
            self._abandon_stage(p, now)
        if event.startswith("goto_"):
            first, last = compiled.where[source][1] + 1, int(event[5:])
            for stage in compiled.stages[first:last]:
                for name in stage:
                    p.steps[name].status = StepStatus.SKIPPED
                    pending.touch(p.steps[name])
        run.state = target
        pending.history.append(HistoryEntry(run.id, now, Kind.STATE, None, None,
                                            {"from": source, "to": target, "event": event}))
        if target in compiled.where:
            run.status = RunStatus.RUNNING
        else:
            status = RunStatus(target)
            run.status = status
            run.wake_at = None
            if status not in (RunStatus.COMPLETED, RunStatus.COMPENSATION_FAILED):
                try:
                    self.emitter.emit(run, p.results, compiled.saga.on_failure, pending, now)
                except (EventError, ExpressionError) as exc:
                    pending.note(now, Kind.RUN_EMIT_FAILED, error=str(exc))
            pending.note(now, END_KIND[status], error=run.error)
            if run.parent_run_id is not None and status in FINAL:
                # A child saga's end wakes its parent's waiting step, in this commit; the
                # parent as this executor last wrote it is stale from then on.
                pending.wake.append((run.parent_run_id, str(run.parent_step)))
                self.forget(run.parent_run_id)
            self.tracer.run_ended(run, status)  # tracing
        pending.dirty = True

    def _abandon_stage(self, p: RunPass, now: float) -> None:
        """Stop the other steps of a failing stage: no new attempts, no waiting."""
        for name in p.compiled.stages[p.compiled.where[p.run.state][1]]:
            rec = p.steps[name]
            if rec.status == StepStatus.AWAITING:
                p.pending.awaits_remove.append((p.run.id, name))
            if rec.status in _OPEN_STEP:
                rec.status = StepStatus.ABANDONED
                rec.wake_at = None
                p.pending.touch(rec)
            if name in p.compiled.fan_outs:
                self.constructs.abandon_items(p, name)

    # -- forward steps ---------------------------------------------------------------------------

    def _start_steps(self, p: RunPass, names: tuple[str, ...], now: float
                     ) -> Flow[HandlerStopError | None]:
        run, compiled, pending = p.run, p.compiled, p.pending
        fresh = (run.rev == 1 and run.lease_owner == self.owner
                 and run.lease_expires is not None
                 and run.lease_expires - now > _FRESH_MARGIN)
        actions: list[tuple[ActionStep, StepRecord]] = []
        for name in names:
            step = compiled.steps[name]
            rec = p.steps[name]
            kind = type(step)
            if kind is AwaitStep:
                assert isinstance(step, AwaitStep)
                yield from self._start_await(p, step, rec, now)
            elif kind is PolicyStep:
                assert isinstance(step, PolicyStep)
                self._run_policy(p, step, rec, now)
            else:
                assert isinstance(step, ActionStep)
                actions.append((step, rec))
                if fresh and rec.status == StepStatus.RUNNING and rec.attempt == 1:
                    continue  # started, and leased to us, by the commit that created the run
                begin_attempt(pending, rec, now)
        if not actions:
            return None
        # "started" is durable, the lease ours. A cancellation asked meanwhile (while
        # another worker held the run, say) comes back with this commit: no handler runs.
        if (pending.dirty or not fresh) and (yield from self._flush(p, final=False)):
            return None
        calls = [self._invocation(p, step, self.registry.get_action(step.action),
                                  self._step_context(p, step, rec)) for step, rec in actions]
        spans = self.tracer.calls_started(run, [(s.name, r.attempt) for s, r in actions])
        done = outcomes((yield Call(calls)))
        self.tracer.calls_ended(spans, done)  # tracing
        now = self.clock.now()
        stop: HandlerStopError | None = None
        for (step, rec), outcome in zip(actions, done, strict=True):
            self._record_attempt(p, step, rec, outcome, now)
            if outcome.stop:
                stop = stop_error(outcome, run.id, step.name)
                _log.error("worker.stop_requested", run_id=run.id, step=step.name,
                           error=str(stop))
        return stop

    def _invocation(self, p: RunPass, step: ActionStep, binding: Binding, ctx: Any
                    ) -> Invocation:
        """A call under the step's timeout (its own, its saga's, or the engine's)."""
        declared = step.timeout or p.compiled.saga.defaults.timeout
        return Invocation(binding, ctx, declared or self.config.step_timeout,
                          declared=declared is not None)

    def _step_context(self, p: RunPass, step: ActionStep, rec: StepRecord) -> StepContext:
        run = p.run
        name = step.name
        return StepContext(run.id, run.saga, name, rec.attempt, run.input,
                           Results(dict(p.results)), run.correlation_id, run.cause,
                           f"{run.id}:{name}", _Checkpoints(self, run.id, rec),
                           journal_clone(rec.checkpoint))

    # The engines plug in how a checkpoint reaches the store from a handler: a blocking
    # write (sync handlers) and an awaitable one (async handlers on the async engine),
    # each given the store method's name and arguments.
    write_now: Callable[..., Any]
    write_async: Callable[..., Any]

    def bind_store(self, write: Callable[..., Any], awrite: Callable[..., Any]) -> None:
        self.write_now = write
        self.write_async = awrite

    def _record_attempt(self, p: RunPass, step: ActionStep, rec: StepRecord, outcome: Outcome,
                        now: float) -> None:
        p.pending.touch(rec)
        if outcome.ok:
            try:
                value = journal_value(outcome.value, f"the result of step {step.name}")
            except ValueLimitError as exc:
                self._fail(p, step, rec, exc, now, retry=False)
                return
            rec.result = value
            try:
                self._succeed(p, step, rec, now)
            except (EventError, ExpressionError) as exc:
                # The handler's effect happened: keep its result as a checkpoint so the
                # step is compensated, and fail it (nothing was published).
                rec.checkpoint = value
                rec.result = None
                self._fail(p, step, rec, exc, now, retry=False)
            return
        assert outcome.error is not None
        self._fail(p, step, rec, outcome.error, now)

    def _succeed(self, p: RunPass, step: Step, rec: StepRecord, now: float) -> None:
        old = rec.status
        rec.status = StepStatus.SUCCEEDED  # emit mappings may read this step's own result
        p.results[step.name] = rec.result
        try:
            self.emitter.emit(p.run, p.results, step.emit, p.pending, now)
        except (EventError, ExpressionError):
            rec.status = old
            del p.results[step.name]
            raise
        rec.error = None
        rec.error_detail = None
        rec.wake_at = None
        rec.finished_at = now
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_SUCCEEDED, step.name, rec.attempt, result=rec.result)

    def _fail(self, p: RunPass, step: Step, rec: StepRecord, error: BaseException, now: float,
              *, retry: bool = True) -> None:
        """Journal a failed attempt: retry after a delay, or fail the step for good."""
        # A catch entry that takes the error lets the run go on (the planner decides).
        table = step.catch if type(step) is ActionStep or type(step) is SagaStep else ()
        if failed_attempt(p.pending, p.compiled.saga, step, rec, error, now,
                          key=f"{p.run.id}:{step.name}", retry=retry,
                          catch=table) and rec.caught is None:
            p.run.error = f"step {step.name}: {rec.error}"

    def _run_policy(self, p: RunPass, step: PolicyStep, rec: StepRecord, now: float) -> None:
        rec.attempt += 1
        rec.started_at = now
        try:
            inputs = {k: evaluate(v, p.run, p.results) for k, v in step.input.items()}
            policy = self.catalog.policy(step.policy, step.version)
            record = evaluate_policy(policy, inputs, now=utc(now))
        except (PolicyError, ExpressionError, KeyError) as exc:
            self._fail(p, step, rec, exc, now, retry=False)
            return
        decision = {**record.to_dict(), "run_id": p.run.id, "step": step.name}
        p.pending.decisions.append(decision)
        p.pending.note(now, Kind.POLICY_DECIDED, step.name, rec.attempt,
                       decision=record.decision, reason=record.reason, rule=record.rule,
                       decision_id=record.decision_id)
        rec.result = record.to_dict()
        if record.decision == "approve":
            try:
                self._succeed(p, step, rec, now)
            except (EventError, ExpressionError) as exc:
                self._fail(p, step, rec, exc, now, retry=False)
            return
        self._fail(p, step, rec, PolicyError(policy.name, f"rejected: {record.reason}"), now,
                   retry=False)

    def _start_await(self, p: RunPass, step: AwaitStep, rec: StepRecord, now: float
                     ) -> Flow[None]:
        run, pending = p.run, p.pending
        if rec.status == StepStatus.AWAITING:  # its timer fired
            pending.awaits_remove.append((run.id, step.name))
            pending.note(now, Kind.AWAIT_TIMEOUT, step.name, rec.attempt, event=step.event)
            if step.on_timeout == "compensate":
                self._fail(p, step, rec, TimeoutError(
                    f"no {step.event} event within {step.timeout:g}s"), now, retry=False)
                return
            rec.status = StepStatus.SKIPPED
            rec.error = f"timed out waiting for {step.event}"
            rec.wake_at = None
            pending.touch(rec)
            compiled = p.compiled
            target = compiled.stage_of[step.on_timeout]
            current = compiled.stage_of[step.name]
            if all(p.steps[n].status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED,
                                         StepStatus.FAILED)
                   for n in compiled.stages[current]) and target > current:
                self.move(p, f"goto_{target}", now)
            return
        spec = self.book.matches[(run.saga, run.version, step.name)]
        run_scope = {"input": run.input, "results": p.results, "run": run_fields(run)}
        key = spec.run_key(run_scope)
        rec.attempt += 1
        rec.started_at = now
        buffered = yield Read("find_buffered", step.event, key, now)
        for early in buffered:
            pending.buffered_seen.append(early.event_id)
            if spec.matches({**run_scope, "event": early.envelope}):
                pending.consume.append(early.event_id)
                self.resume_with(p, step, rec, early.envelope, now, early=True)
                return
        rec.status = StepStatus.AWAITING
        rec.wake_at = now + (step.timeout or 0.0)
        pending.touch(rec)
        pending.awaits_add.append(AwaitRecord(run.id, step.name, step.event, key, run.saga,
                                              run.version))
        pending.note(now, Kind.AWAIT_SUSPENDED, step.name, rec.attempt, event=step.event,
                     key=key)

    def resume_with(self, p: RunPass, step: AwaitStep, rec: StepRecord,
                    envelope: dict[str, Any], now: float, *, early: bool = False) -> None:
        """The awaited event arrived: the await step succeeds with the event's data."""
        rec.result = envelope.get("data")
        p.run.cause = envelope["id"]  # events after this step are caused by this event
        p.pending.note(now, Kind.AWAIT_RESUMED, step.name, rec.attempt,
                       event_id=envelope["id"], early=early)
        try:
            self._succeed(p, step, rec, now)
        except (EventError, ExpressionError) as exc:
            self._fail(p, step, rec, exc, now, retry=False)

    # -- compensation ----------------------------------------------------------------------------

    def _compensate(self, p: RunPass, name: str, now: float) -> Flow[HandlerStopError | None]:
        run, compiled, pending = p.run, p.compiled, p.pending
        step = compiled.steps[name]
        assert isinstance(step, ActionStep)
        assert step.compensate is not None
        rec = p.steps[name]
        begin_compensation(pending, rec, now)
        yield from self._flush(p, final=False)
        completed = rec.status == StepStatus.SUCCEEDED
        ctx = CompensationContext(
            run.id, run.saga, name, rec.comp_attempt, run.input, Results(dict(p.results)),
            run.correlation_id, run.cause, f"{run.id}:{name}:compensate",
            rec.result if completed else rec.checkpoint, completed,
            journal_clone(rec.checkpoint))
        saga = compiled.saga
        call = self._invocation(p, step, self.registry.get_compensation(step.compensate), ctx)
        spans = self.tracer.calls_started(run, [(name, rec.comp_attempt)], compensation=True)
        outcome = outcomes((yield Call([call])))[0]
        self.tracer.calls_ended(spans, [outcome])  # tracing
        now = self.clock.now()
        pending.touch(rec)
        if outcome.ok:
            compensation_succeeded(run, rec, pending, now)
            try:
                self.emitter.emit(run, p.results, step.emit_on_compensate, pending, now)
            except (EventError, ExpressionError) as exc:
                pending.note(now, Kind.COMPENSATION_EMIT_FAILED, name, error=str(exc))
            return None
        return compensation_failed(run, rec, name, outcome,
                                   retry_policy(saga, step, compensation=True),
                                   f"{run.id}:{name}:compensate", pending, now)

    # -- containing the engine's own errors ------------------------------------------------------

    def contain(self, run_id: str, error: BaseException) -> Flow[None]:
        """Record an engine error met while advancing ``run_id`` so the worker can go on.

        Moving forward, the current stage's open steps fail with the error (not retried:
        it would happen again), so the next pass compensates. Otherwise, or if that
        cannot be written, the run is parked as ``stuck`` with the error, visible to
        ``inspect`` and ``runs`` and resumable with ``retry`` after a fix.
        """
        message = f"engine error: {describe(error)}"
        _log.error("run.engine_error", run_id=run_id, error=message)
        self.forget(run_id)
        try:
            loaded = yield Read("load", run_id)
            if loaded is None:
                return None
            run, stored = loaded
            if run.status not in ACTIVE or run.leased_to_other(self.owner, self.clock.now()):
                return None
            compiled = self.book.of(run.saga, run.version)
            steps = with_defaults(compiled, stored)
            where = compiled.where.get(run.state)
            if where is not None and where[0] == "run":
                p = RunPass(run, steps, compiled, Pending(run), results_of(steps))
                now = self.clock.now()
                failing = [p.steps[n] for n in compiled.stages[where[1]]
                           if p.steps[n].status in _OPEN_STEP]
                if failing:
                    for rec in failing:
                        if rec.status == StepStatus.AWAITING:
                            p.pending.awaits_remove.append((run.id, rec.name))
                        self._fail(p, compiled.steps[rec.name], rec, EngineFault(message),
                                   now, retry=False)
                    yield from self._flush(p, final=True)
                    return None
        except ConflictError:
            return None  # someone else moved the run on
        except Exception as again:  # contain whatever it is, then park
            message = f"{message}; recording it failed: {describe(again)}"
        try:
            yield Write("park", run_id, self.owner, message, self.clock.now())
        except ConcordiaError as exc:
            _log.error("run.park_failed", run_id=run_id, error=describe(exc))
        return None

    # -- operations ------------------------------------------------------------------------------

    def request_cancel(self, run_id: str, reason: str) -> Flow[RunRecord]:
        """Ask a run to stop and compensate; returns the run as it stands after the ask."""
        self.forget(run_id)
        check_text(reason, "the cancellation's reason", MAX_REASON)
        run = (yield Read("get_run", run_id)) if is_run_id(run_id) else None
        if run is None:
            raise UnknownRunError(run_id)
        where = self.book.of(run.saga, run.version).where.get(run.state)
        if run.status not in ACTIVE or where is None or where[0] != "run":
            raise ConcordiaError(f"run {run_id} is {run.status} ({run.state}); only a run "
                                 "moving forward can be cancelled")
        updated = yield Write("request_cancel", run_id, reason, self.clock.now())
        if updated is None:
            raise UnknownRunError(run_id)
        result: RunRecord = updated
        return result

    def retry(self, run_id: str) -> Flow[None]:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix)."""
        self.forget(run_id)
        loaded = (yield Read("load", run_id)) if is_run_id(run_id) else None
        if loaded is None:
            raise UnknownRunError(run_id)
        run, stored = loaded
        if run.status not in HALTED:
            raise ConcordiaError(f"run {run_id} is {run.status}; only a run in "
                                 "compensation_failed or stuck can be retried")
        compiled = self.book.of(run.saga, run.version)
        steps = with_defaults(compiled, stored)
        p = RunPass(run, steps, compiled, Pending(run), results_of(steps))
        now = self.clock.now()
        if run.status == RunStatus.STUCK:
            run.status = RunStatus.RUNNING
            p.pending.dirty = True
        else:
            stuck = [r for r in steps.values() if r.comp_status == CompStatus.FAILED]
            stage = max(stage_index(compiled, r.name) for r in stuck) if stuck else 0
            for rec in stuck:
                rec.comp_status = None
                rec.comp_attempt = 0
                p.pending.touch(rec)
            self.move(p, f"resume_{stage}", now)
        p.pending.note(now, Kind.RUN_RETRIED)
        yield from self._flush(p, final=True)
        return None


class EngineFault(Exception):
    """The engine's own error while advancing a run, journaled as the step's failure."""


class _Checkpoints:
    """Where one attempt's ``ctx.checkpoint`` goes: the store, unless the attempt is over."""

    __slots__ = ("attempt", "executor", "rec", "run_id")

    def __init__(self, executor: Executor, run_id: str, rec: StepRecord) -> None:
        self.executor = executor
        self.run_id = run_id
        self.rec = rec
        self.attempt = rec.attempt

    def _accept(self, data: Any) -> Any:
        rec = self.rec
        if rec.status != StepStatus.RUNNING or rec.attempt != self.attempt:
            # A sync handler abandoned by its timeout runs on in its thread; what it
            # checkpoints now would overwrite a later attempt's progress.
            raise StepAbandonedError(f"attempt {self.attempt} of {rec.name} is over "
                                     "(timed out); not checkpointed")
        return journal_value(data, f"step {rec.name} checkpoint")

    def _args(self, data: Any) -> tuple[Any, ...]:
        executor = self.executor
        return ("save_checkpoint", self.run_id, self.rec.name, self.attempt, executor.owner,
                data, executor.clock.now())

    def _saved(self, data: Any, current: bool) -> None:
        if not current:
            raise StepAbandonedError(f"attempt {self.attempt} of {self.rec.name} is no "
                                     "longer this worker's (its lease moved on); not "
                                     "checkpointed")
        self.rec.checkpoint = data

    def save(self, data: Any) -> None:
        data = self._accept(data)
        self._saved(data, self.executor.write_now(*self._args(data)))

    async def asave(self, data: Any) -> None:
        data = self._accept(data)
        self._saved(data, await self.executor.write_async(*self._args(data)))


def journal_clone(value: Any) -> Any:
    """A handler's own copy of a journaled value (``None`` stays as it is, for free)."""
    return None if value is None else json_clone(value)


def take_commit(pending: Pending, now: float) -> tuple[Commit, list[dict[str, Any]]]:
    """The pending transition as a commit (and its transient events); resets ``pending``."""
    run = pending.run
    run.updated_at = now
    commit = Commit(run=run, steps=list(pending.steps.values()), history=pending.history,
                    events=pending.events, decisions=pending.decisions,
                    awaits_add=pending.awaits_add, awaits_remove=pending.awaits_remove,
                    consume_buffered=pending.consume, buffered_seen=pending.buffered_seen,
                    expect_rev=run.rev, wake=pending.wake)
    transient = [e["envelope"] for e in pending.events if not e["persistent"]]
    pending.steps, pending.history, pending.events, pending.decisions = {}, [], [], []
    pending.awaits_add, pending.awaits_remove, pending.consume = [], [], []
    pending.buffered_seen = []
    if pending.wake:
        pending.wake = []
    pending.dirty = False
    return commit, transient

