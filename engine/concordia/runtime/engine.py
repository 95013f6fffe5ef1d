"""The interpreter's driver: starts runs, carries out the core's plans, journals outcomes.

Each pass over a run loads its journal, asks :func:`concordia.runtime.core.plan` what to
do, does it (calls a handler, evaluates a policy, registers an await, applies a machine
move) and accumulates the outcome in one pending :class:`Commit`. The commit is flushed
before a handler is called (so "started" is durable before the side effect) and when the
run has to wait; a step's result and the next step's start therefore share one commit.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from concordia.clock import Clock, SystemClock
from concordia.definitions.catalog import Catalog
from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRY,
    ActionStep,
    AwaitStep,
    Emit,
    PolicyStep,
    RetryPolicy,
    Saga,
)
from concordia.errors import (
    BindingError,
    ConcordiaError,
    EventError,
    ExpressionError,
    PolicyError,
    StoreError,
    UnknownRunError,
    UnknownSagaError,
)
from concordia.events.bus import Bus
from concordia.events.envelope import Envelope, new_event
from concordia.events.taxonomy import validate_event, validate_payload
from concordia.ids import new_id
from concordia.jsonvalidation import check, summarise
from concordia.logging import ensure_configured
from concordia.machine.compile import COMPENSATION_FAILED, TERMINAL, CompiledSaga, compile_saga
from concordia.policies import evaluate_policy
from concordia.registry import Registry
from concordia.runtime.context import CompensationContext, StepContext
from concordia.runtime.core import plan
from concordia.runtime.invoke import Invoker, Outcome
from concordia.runtime.matching import MatchSpec, compile_match
from concordia.runtime.retry import backoff_delay, is_retryable
from concordia.runtime.views import RunView
from concordia.store import open_store
from concordia.store.base import ConflictError, Store
from concordia.store.records import (
    ACTIVE,
    APPLIED,
    CONFLICT,
    DUPLICATE,
    AwaitRecord,
    BufferedEvent,
    Commit,
    HistoryEntry,
    Inbound,
    RunRecord,
    StepRecord,
)

_log = structlog.get_logger("concordia.engine")


class InputError(ConcordiaError):
    """A run's input does not fit the saga's input schema."""

    def __init__(self, saga: str, message: str, field: str | None) -> None:
        self.saga = saga
        self.field = field
        super().__init__(f"saga {saga!r}: input {message}")


@dataclass
class Delivery:
    """What delivering one event did."""

    event_id: str
    duplicate: bool = False
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    buffered: bool = False


@dataclass
class _Pending:
    """The commit being accumulated for one run."""

    run: RunRecord
    steps: dict[str, StepRecord] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    awaits_add: list[AwaitRecord] = field(default_factory=list)
    awaits_remove: list[tuple[str, str]] = field(default_factory=list)
    consume: list[str] = field(default_factory=list)
    buffered_seen: list[str] = field(default_factory=list)
    dirty: bool = False

    def touch(self, rec: StepRecord) -> None:
        self.steps[rec.name] = rec
        self.dirty = True

    def note(self, at: float, kind: str, step: str | None = None, attempt: int | None = None,
             **detail: Any) -> None:
        self.history.append(HistoryEntry(self.run.id, at, kind, step, attempt, detail))
        self.dirty = True


class Engine:
    """Runs sagas from a :class:`Catalog` with handlers from a :class:`Registry`."""

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 *, clock: Clock | None = None, bus: Bus | None = None,
                 source: str = "urn:concordia", early_event_ttl: float = 3600.0,
                 check_bindings: bool = True) -> None:
        ensure_configured()
        self.catalog = catalog
        self.registry = registry
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.clock: Clock = clock or SystemClock()
        self.bus = bus
        self.source = source
        self.early_event_ttl = early_event_ttl
        self._invoker = Invoker()
        self._compiled: dict[tuple[str, int], CompiledSaga] = {}
        self._matches: dict[tuple[str, int, str], MatchSpec] = {}
        self._awaiters: dict[str, list[tuple[str, int, str]]] = {}
        self._triggers: dict[str, list[Saga]] = {}
        # Runs this engine created whose first steps' start is already in the creating
        # commit (see _new_run); bounded, since another worker may advance them instead.
        self._fresh: OrderedDict[str, None] = OrderedDict()
        for saga in catalog.sagas.values():
            self._compiled[saga.key] = compile_saga(saga)
            for step in saga.steps:
                if isinstance(step, AwaitStep):
                    self._matches[(saga.name, saga.version, step.name)] = compile_match(step.match)
                    self._awaiters.setdefault(step.event, []).append(
                        (saga.name, saga.version, step.name))
        for name in {n for n, _ in catalog.sagas}:
            latest = catalog.saga(name)
            if latest.trigger is not None:
                self._triggers.setdefault(latest.trigger.event, []).append(latest)
        if check_bindings:
            self._check_bindings()

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db", **kwargs: Any) -> Engine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly."""
        paths = [p for p in (os.path.join(path, "definitions"), os.path.join(path, "policies"))
                 if os.path.isdir(p)] or [path]
        catalog = Catalog.load_strict(paths)
        return cls(catalog, registry, store, **kwargs)

    def _check_bindings(self) -> None:
        missing: list[tuple[str, str, str]] = []
        actions = set(self.registry.action_names())
        comps = set(self.registry.compensation_names())
        for saga in self.catalog.sagas.values():
            for step in saga.steps:
                if not isinstance(step, ActionStep):
                    continue
                where = f"{saga.name} v{saga.version} step {step.name}"
                if step.action not in actions:
                    missing.append(("action", step.action, where))
                if step.compensate and step.compensate not in comps:
                    missing.append(("compensation", step.compensate, where))
        if missing:
            raise BindingError(missing)

    # -- starting --------------------------------------------------------------------------

    def start(self, saga: str, input: Mapping[str, Any] | None = None, *,
              correlation_id: str | None = None, causation_id: str | None = None,
              version: int | None = None, run_id: str | None = None) -> RunView:
        """Create a run (durably) and return it; a worker or ``run_until_idle`` drives it."""
        definition = self._saga(saga, version)
        run = self._create_run(definition, dict(input or {}), correlation_id, causation_id,
                               run_id=run_id)
        return self._view(run, self.store.get_steps(run.id))

    def _saga(self, name: str, version: int | None) -> Saga:
        try:
            return self.catalog.saga(name, version)
        except KeyError:
            raise UnknownSagaError(name, [n for n, _ in self.catalog.sagas], version) from None

    def _create_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                    causation_id: str | None, *, run_id: str | None = None) -> RunRecord:
        commit = self._new_run(saga, data, correlation_id, causation_id, run_id=run_id)
        self.store.create_run(commit)
        return commit.run

    def _new_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                 causation_id: str | None, *, run_id: str | None = None,
                 trigger: str | None = None) -> Commit:
        """The commit that creates a run (its input checked against the saga's schema)."""
        errors = check(saga.input_schema, data)
        if errors:
            raise InputError(saga.name, summarise(errors), errors[0].field or None)
        data = _json_copy(data)
        now = self.clock.now()
        rid = run_id or new_id()
        compiled = self._compiled[saga.key]
        run = RunRecord(id=rid, saga=saga.name, version=saga.version, status="running",
                        state=compiled.initial, input=data,
                        correlation_id=correlation_id or new_id(), causation_id=causation_id,
                        cause=causation_id or rid, created_at=now, updated_at=now)
        steps = [StepRecord(s.name) for s in saga.steps]
        detail: dict[str, Any] = {"input": data, "correlation_id": run.correlation_id}
        if trigger:
            detail["trigger"] = trigger
        history = [HistoryEntry(rid, now, "run.started", None, None, detail)]
        # The first stage's actions are marked started in the creating commit, so their
        # start is durable before their side effects without a commit of its own.
        first = set(compiled.stages[0])
        for rec in steps:
            if rec.name in first and isinstance(saga.step(rec.name), ActionStep):
                rec.status, rec.attempt, rec.started_at = "running", 1, now
                history.append(HistoryEntry(rid, now, "step.started", rec.name, 1, {}))
        self._fresh[rid] = None
        while len(self._fresh) > 10_000:
            self._fresh.popitem(last=False)
        return Commit(run=run, steps=steps, history=history)

    # -- driving ---------------------------------------------------------------------------

    def run_until_idle(self, max_passes: int | None = None) -> int:
        """Advance every run that has work now, until none has; return passes made."""
        passes = 0
        while max_passes is None or passes < max_passes:
            due = self.store.due_runs(self.clock.now(), 100)
            if not due:
                break
            for run_id in due:
                self.advance(run_id)
                passes += 1
        if self.bus is not None:
            self.relay_outbox()
        return passes

    def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait for timers due within ``max_wait`` seconds
        (sleeping on the engine's clock; a virtual clock just jumps) until none is left."""
        passes = self.run_until_idle()
        while True:
            wake = self.store.next_wake_at()
            now = self.clock.now()
            if wake is None or wake - now > max_wait:
                return passes
            self.clock.sleep(wake - now)
            passes += self.run_until_idle()

    def work(self, stop: threading.Event | None = None, poll_interval: float = 0.5) -> None:
        """Worker loop: drive runs and fire timers until ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.run_until_idle()
            wake = self.store.next_wake_at()
            delay = poll_interval if wake is None else min(poll_interval,
                                                           max(wake - self.clock.now(), 0.0))
            stop.wait(delay)

    def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now."""
        try:
            self._advance(run_id)
        except ConflictError:
            # Someone else (a delivery, another worker) moved the run; the next pass
            # reloads it. Handlers already called re-run with the same idempotency key.
            _log.debug("advance.conflict", run_id=run_id)

    def _advance(self, run_id: str) -> None:
        run = self.store.get_run(run_id)
        if run is None or run.status not in ACTIVE:
            return
        steps = self.store.get_steps(run_id)
        compiled = self._compiled_for(run)
        pending = _Pending(run)
        while True:
            now = self.clock.now()
            p = plan(compiled, run, steps, now)
            if p.kind == "move":
                assert p.event is not None
                self._move(compiled, run, steps, p.event, pending, now)
                continue
            if p.kind == "start":
                self._start_steps(compiled, run, steps, p.steps, pending, now)
                continue
            if p.kind == "compensate":
                self._compensate(compiled, run, steps, p.steps[0], pending, now)
                continue
            if p.kind == "wait":
                run.status = "suspended" if p.suspended else "waiting"
                run.wake_at = p.wake_at
                pending.dirty = True
            self._flush(pending)
            return

    def _compiled_for(self, run: RunRecord) -> CompiledSaga:
        try:
            return self._compiled[(run.saga, run.version)]
        except KeyError:
            raise UnknownSagaError(run.saga, [n for n, _ in self.catalog.sagas],
                                   run.version) from None

    def _flush(self, pending: _Pending) -> None:
        if not pending.dirty:
            return
        commit, transient = self._take_commit(pending)
        self.store.commit(commit)
        self._publish(transient)

    def _take_commit(self, pending: _Pending) -> tuple[Commit, list[dict[str, Any]]]:
        """The pending transition as a commit (and its transient events); resets ``pending``."""
        run = pending.run
        run.updated_at = self.clock.now()
        commit = Commit(run=run, steps=list(pending.steps.values()), history=pending.history,
                        events=pending.events, decisions=pending.decisions,
                        awaits_add=pending.awaits_add, awaits_remove=pending.awaits_remove,
                        consume_buffered=pending.consume,
                        buffered_seen=pending.buffered_seen, expect_rev=run.rev)
        transient = [e["envelope"] for e in pending.events if not e["persistent"]]
        pending.steps, pending.history, pending.events, pending.decisions = {}, [], [], []
        pending.awaits_add, pending.awaits_remove, pending.consume = [], [], []
        pending.buffered_seen = []
        pending.dirty = False
        return commit, transient

    def _publish(self, transient: list[dict[str, Any]]) -> None:
        """Publish transient events, after their commit: best effort by definition."""
        if self.bus is None:
            return
        for envelope in transient:
            try:
                self.bus.publish(envelope)
            except Exception as exc:
                _log.warning("event.publish_failed", event_id=envelope["id"], error=str(exc))

    # -- machine moves ---------------------------------------------------------------------

    def _move(self, compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
              event: str, pending: _Pending, now: float) -> None:
        if event == "done" and compiled.move(run.state, event) == "completed":
            try:
                self._emit(run, steps, compiled.saga.on_complete, pending, now)
            except (EventError, ExpressionError) as exc:
                run.error = f"on_complete: {exc}"
                pending.note(now, "run.emit_failed", error=str(exc))
                event = "fail"
        source = run.state
        target = compiled.move(source, event)
        if event in ("fail", "cancel"):
            self._abandon_stage(compiled, run, steps, pending, now)
        if event.startswith("goto_"):
            first, last = compiled.stage_of_state(source) + 1, int(event[5:])
            for stage in compiled.stages[first:last]:
                for name in stage:
                    steps[name].status = "skipped"
                    pending.touch(steps[name])
        run.state = target
        pending.history.append(HistoryEntry(run.id, now, "state", None, None,
                                            {"from": source, "to": target, "event": event}))
        if target in TERMINAL:
            run.status = target
            run.wake_at = None
            if target != "completed":
                try:
                    self._emit(run, steps, compiled.saga.on_failure, pending, now)
                except (EventError, ExpressionError) as exc:
                    pending.note(now, "run.emit_failed", error=str(exc))
            pending.note(now, f"run.{target}", error=run.error)
        elif target == COMPENSATION_FAILED:
            run.status = COMPENSATION_FAILED
            run.wake_at = None
            pending.note(now, "run.compensation_failed", error=run.error)
        else:
            run.status = "running"
        pending.dirty = True

    def _abandon_stage(self, compiled: CompiledSaga, run: RunRecord,
                       steps: dict[str, StepRecord], pending: _Pending, now: float) -> None:
        """Stop the other steps of a failing stage: no new attempts, no waiting."""
        for name in compiled.stages[compiled.stage_of_state(run.state)]:
            rec = steps[name]
            if rec.status == "awaiting":
                pending.awaits_remove.append((run.id, name))
            if rec.status in ("pending", "waiting_retry", "awaiting", "running"):
                rec.status = "abandoned"
                rec.wake_at = None
                pending.touch(rec)

    # -- forward steps ---------------------------------------------------------------------

    def _start_steps(self, compiled: CompiledSaga, run: RunRecord,
                     steps: dict[str, StepRecord], names: Sequence[str], pending: _Pending,
                     now: float) -> None:
        saga = compiled.saga
        actions: list[tuple[ActionStep, StepRecord]] = []
        for name in names:
            step = saga.step(name)
            rec = steps[name]
            if isinstance(step, AwaitStep):
                self._start_await(run, steps, step, rec, pending, now)
            elif isinstance(step, PolicyStep):
                self._run_policy(run, steps, step, rec, pending, now)
            else:
                assert isinstance(step, ActionStep)
                actions.append((step, rec))
                if rec.status == "running" and run.id in self._fresh:
                    continue  # started durably by the commit that created the run
                if rec.status != "running":  # a crash-interrupted attempt re-runs as is
                    rec.attempt += 1
                rec.status = "running"
                rec.wake_at = None
                rec.started_at = now
                pending.touch(rec)
                pending.note(now, "step.started", name, rec.attempt)
        self._fresh.pop(run.id, None)
        if not actions:
            return
        self._flush(pending)  # "started" is durable before any side effect
        results = self._results(steps)
        calls = []
        for step, rec in actions:
            ctx = self._step_context(run, step, rec, results)
            calls.append((self.registry.get_action(step.action), ctx,
                          step.timeout or saga.defaults.timeout))
        outcomes = self._invoke(run, calls)
        now = self.clock.now()
        for (step, rec), outcome in zip(actions, outcomes, strict=True):
            self._record_attempt(run, steps, step, rec, outcome, pending, now)

    def _invoke(self, run: RunRecord, calls: list[tuple[Any, Any, float | None]]) -> list[Outcome]:
        # The invoker binds each call's run_id, saga, step, attempt, correlation_id and
        # causation_id as structlog context variables, in that call's own context.
        return self._invoker.call_many(calls)

    def _step_context(self, run: RunRecord, step: ActionStep, rec: StepRecord,
                      results: dict[str, Any]) -> StepContext:
        store, clock = self.store, self.clock

        def save(data: Any) -> None:
            data = _json_copy(data)
            store.save_checkpoint(run.id, step.name, data, clock.now())
            rec.checkpoint = data

        log = _log.bind(run_id=run.id, saga=run.saga, step=step.name, attempt=rec.attempt,
                        correlation_id=run.correlation_id, causation_id=run.cause)
        return StepContext(run_id=run.id, saga=run.saga, step=step.name, attempt=rec.attempt,
                           input=_json_clone(run.input), results=_json_clone(results),
                           correlation_id=run.correlation_id, causation_id=run.cause,
                           idempotency_key=f"{run.id}:{step.name}", log=log, _checkpoint=save,
                           checkpoint_data=rec.checkpoint)

    def _record_attempt(self, run: RunRecord, steps: dict[str, StepRecord], step: ActionStep,
                        rec: StepRecord, outcome: Outcome, pending: _Pending,
                        now: float) -> None:
        pending.touch(rec)
        if outcome.ok:
            try:
                value = _json_copy(outcome.value)
            except (TypeError, ValueError) as exc:
                self._fail_step(run, step, rec, TypeError(
                    f"result is not JSON-serialisable: {exc}"), pending, now, None)
                return
            rec.result = value
            try:
                self._succeed(run, steps, step, rec, pending, now)
            except (EventError, ExpressionError) as exc:
                # The handler's effect happened: keep its result as a checkpoint so the
                # step is compensated, and fail it (nothing was published).
                rec.checkpoint = value
                rec.result = None
                self._fail_step(run, step, rec, exc, pending, now, None)
            return
        assert outcome.error is not None
        policy = step.retry or self._saga(run.saga, run.version).defaults.retry or DEFAULT_RETRY
        self._fail_step(run, step, rec, outcome.error, pending, now, policy)

    def _succeed(self, run: RunRecord, steps: dict[str, StepRecord],
                 step: ActionStep | AwaitStep | PolicyStep, rec: StepRecord,
                 pending: _Pending, now: float) -> None:
        old = rec.status
        rec.status = "succeeded"  # emit mappings may read this step's own result
        try:
            self._emit(run, steps, step.emit, pending, now)
        except (EventError, ExpressionError):
            rec.status = old
            raise
        rec.error = None
        rec.wake_at = None
        rec.finished_at = now
        pending.touch(rec)
        pending.note(now, "step.succeeded", step.name, rec.attempt, result=rec.result)

    def _fail_step(self, run: RunRecord, step: ActionStep | AwaitStep | PolicyStep,
                   rec: StepRecord, error: BaseException, pending: _Pending, now: float,
                   policy: RetryPolicy | None) -> None:
        message = _describe(error)
        rec.error = message
        pending.touch(rec)
        if policy is not None and is_retryable(policy, error) and rec.attempt < policy.attempts:
            delay = backoff_delay(policy, rec.attempt, f"{run.id}:{step.name}")
            rec.status = "waiting_retry"
            rec.wake_at = now + delay
            pending.note(now, "step.retry_scheduled", step.name, rec.attempt, error=message,
                         delay=round(delay, 6))
            return
        rec.status = "failed"
        rec.wake_at = None
        rec.finished_at = now
        run.error = f"step {step.name}: {message}"
        pending.note(now, "step.failed", step.name, rec.attempt, error=message)

    def _run_policy(self, run: RunRecord, steps: dict[str, StepRecord], step: PolicyStep,
                    rec: StepRecord, pending: _Pending, now: float) -> None:
        rec.attempt += 1
        rec.started_at = now
        try:
            scope = self._scope(run, steps)
            inputs = {k: compile_expression(v).evaluate(scope) for k, v in step.input.items()}
            policy = self.catalog.policy(step.policy, step.version)
            record = evaluate_policy(policy, inputs, now=_utc(now))
        except (PolicyError, ExpressionError, KeyError) as exc:
            self._fail_step(run, step, rec, exc, pending, now, None)
            return
        decision = {**record.to_dict(), "run_id": run.id, "step": step.name}
        pending.decisions.append(decision)
        pending.note(now, "policy.decided", step.name, rec.attempt, decision=record.decision,
                     reason=record.reason, rule=record.rule, decision_id=record.decision_id)
        rec.result = record.to_dict()
        if record.decision == "approve":
            try:
                self._succeed(run, steps, step, rec, pending, now)
            except (EventError, ExpressionError) as exc:
                self._fail_step(run, step, rec, exc, pending, now, None)
            return
        self._fail_step(run, step, rec, PolicyError(policy.name, f"rejected: {record.reason}"),
                        pending, now, None)

    # -- awaiting --------------------------------------------------------------------------

    def _start_await(self, run: RunRecord, steps: dict[str, StepRecord], step: AwaitStep,
                     rec: StepRecord, pending: _Pending, now: float) -> None:
        if rec.status == "awaiting":  # its timer fired
            pending.awaits_remove.append((run.id, step.name))
            pending.note(now, "await.timeout", step.name, rec.attempt, event=step.event)
            if step.on_timeout == "compensate":
                self._fail_step(run, step, rec, TimeoutError(
                    f"no {step.event} event within {step.timeout:g}s"), pending, now, None)
                return
            rec.status = "skipped"
            rec.error = f"timed out waiting for {step.event}"
            rec.wake_at = None
            pending.touch(rec)
            compiled = self._compiled_for(run)
            target = compiled.stage_of[step.on_timeout]
            current = compiled.stage_of[step.name]
            for name in compiled.stages[current]:
                if steps[name].status not in ("succeeded", "skipped", "failed"):
                    break
            else:
                if target > current:
                    self._move(compiled, run, steps, f"goto_{target}", pending, now)
            return
        spec = self._matches[(run.saga, run.version, step.name)]
        scope = self._scope(run, steps)
        key = spec.run_key(scope)
        rec.attempt += 1
        rec.started_at = now
        for buffered in self.store.find_buffered(step.event, key, now):
            pending.buffered_seen.append(buffered.event_id)
            if spec.matches({**scope, "event": buffered.envelope}):
                pending.consume.append(buffered.event_id)
                self._resume_with(run, steps, step, rec, buffered.envelope, pending, now,
                                  early=True)
                return
        rec.status = "awaiting"
        rec.wake_at = now + (step.timeout or 0.0)
        pending.touch(rec)
        pending.awaits_add.append(AwaitRecord(run.id, step.name, step.event, key, run.saga,
                                              run.version))
        pending.note(now, "await.suspended", step.name, rec.attempt, event=step.event, key=key)

    def _resume_with(self, run: RunRecord, steps: dict[str, StepRecord], step: AwaitStep,
                     rec: StepRecord, envelope: dict[str, Any], pending: _Pending,
                     now: float, early: bool = False) -> None:
        rec.result = _json_copy(envelope.get("data"))
        run.cause = envelope["id"]  # events after this step are caused by this event
        pending.note(now, "await.resumed", step.name, rec.attempt, event_id=envelope["id"],
                     early=early)
        try:
            self._succeed(run, steps, step, rec, pending, now)
        except (EventError, ExpressionError) as exc:
            self._fail_step(run, step, rec, exc, pending, now, None)

    # -- inbound events --------------------------------------------------------------------

    def deliver(self, event: Envelope | Mapping[str, Any]) -> Delivery:
        """Take one inbound event: start the sagas it triggers, resume the runs awaiting it.

        The same event id delivered twice has one effect. An event nothing awaits yet is
        kept for ``early_event_ttl`` seconds, so a callback faster than its saga is not lost.
        Everything a delivery writes (the inbox entry, the runs it starts, the resumptions,
        the buffered copy) is one atomic unit: a crash leaves all of it or none, so a
        redelivery after a crash is never mistaken for a duplicate of a lost delivery.
        """
        return self.deliver_many([event])[0]

    def deliver_many(self, events: Iterable[Envelope | Mapping[str, Any]], *,
                     batch_size: int = 256) -> list[Delivery]:
        """Deliver events in order, up to ``batch_size`` of them per store transaction.

        Each event is applied atomically and exactly as :meth:`deliver` would. An event that
        is malformed or fails validation (or whose trigger mapping fails) raises; the events
        before it are delivered, it and those after it are not.
        """
        pending = list(events)
        results: list[Delivery] = []
        pos = 0
        while pos < len(pending):
            batch: list[tuple[Inbound, list[dict[str, Any]]]] = []
            claimed: set[str] = set()
            try:
                while pos < len(pending) and len(batch) < batch_size:
                    item = pending[pos]
                    if not isinstance(item, Envelope):
                        item = pending[pos] = Envelope.from_dict(item)
                    planned = self._plan_delivery(item, claimed)
                    if planned is None:  # touches a run this batch already resumes
                        break
                    batch.append(planned)
                    pos += 1
            finally:
                results.extend(self._apply_deliveries(batch))
        return results

    def _apply_deliveries(self, batch: list[tuple[Inbound, list[dict[str, Any]]]]
                          ) -> list[Delivery]:
        if not batch:
            return []
        statuses = self.store.apply_delivery([inbound for inbound, _ in batch])
        results: list[Delivery] = []
        for (inbound, transient), status in zip(batch, statuses, strict=True):
            envelope = inbound.envelope
            if status == CONFLICT:  # a run moved since it was read: read again, alone
                results.append(self._deliver_again(Envelope.from_dict(envelope)))
                continue
            result = Delivery(envelope["id"], duplicate=status == DUPLICATE)
            if status == APPLIED:
                result.started = [c.run.id for c in inbound.creates]
                result.resumed = [c.run.id for c in inbound.resumes]
                result.buffered = bool(inbound.buffer)
                self._publish(transient)
            results.append(result)
        return results

    def _deliver_again(self, envelope: Envelope) -> Delivery:
        for _ in range(5):
            planned = self._plan_delivery(envelope, set())
            assert planned is not None
            inbound, transient = planned
            status = self.store.apply_delivery([inbound])[0]
            if status == CONFLICT:
                continue
            result = Delivery(envelope.id, duplicate=status == DUPLICATE)
            if status == APPLIED:
                result.started = [c.run.id for c in inbound.creates]
                result.resumed = [c.run.id for c in inbound.resumes]
                result.buffered = bool(inbound.buffer)
                self._publish(transient)
            return result
        raise StoreError(f"event {envelope.id}: the runs it resumes kept changing under it; "
                         "nothing was delivered, deliver it again")

    def _plan_delivery(self, envelope: Envelope, claimed: set[str]
                       ) -> tuple[Inbound, list[dict[str, Any]]] | None:
        """What delivering ``envelope`` writes (and the transient events to publish after),
        or None if it would resume a run in ``claimed``; adds the runs it resumes there."""
        validate_event(self.catalog, envelope)
        data = envelope.to_dict()
        now = self.clock.now()
        inbound = Inbound(data, now)
        for saga in self._triggers.get(envelope.type, []):
            inbound.creates.append(self._triggered_run(saga, envelope, data))
        resumed: dict[str, tuple[_Pending, dict[str, StepRecord]]] = {}
        for saga_name, version, step_name in self._awaiters.get(envelope.type, []):
            spec = self._matches[(saga_name, version, step_name)]
            key = spec.event_key({"event": data})
            for rec in self.store.find_awaits(envelope.type, key):
                inbound.awaits_seen.append((rec.run_id, rec.step))
                if (rec.saga, rec.version, rec.step) != (saga_name, version, step_name):
                    continue
                if rec.run_id in claimed:
                    return None
                self._plan_resume(rec, spec, data, resumed, now)
        claimed.update(resumed)
        transient: list[dict[str, Any]] = []
        for pending, _ in resumed.values():
            commit, events = self._take_commit(pending)
            inbound.resumes.append(commit)
            transient.extend(events)
        if not resumed and envelope.type in self._awaiters:
            keys = {self._matches[a].event_key({"event": data})
                    for a in self._awaiters[envelope.type]}
            for key in keys:
                inbound.buffer.append(BufferedEvent(
                    f"{envelope.id}" if len(keys) == 1 else f"{envelope.id}:{key}",
                    envelope.type, key, data, now + self.early_event_ttl))
        return inbound, transient

    def _triggered_run(self, saga: Saga, envelope: Envelope, data: dict[str, Any]) -> Commit:
        assert saga.trigger is not None
        if saga.trigger.input:
            scope = {"event": data}
            run_input = {k: compile_expression(v).evaluate(scope)
                         for k, v in saga.trigger.input.items()}
        else:
            run_input = dict(envelope.data or {})
        return self._new_run(saga, run_input, envelope.correlationid, envelope.id,
                             trigger=envelope.id)

    def _plan_resume(self, rec: AwaitRecord, spec: MatchSpec, envelope: dict[str, Any],
                     resumed: dict[str, tuple[_Pending, dict[str, StepRecord]]],
                     now: float) -> None:
        """Resume ``rec``'s run into its pending transition, if it still awaits and matches.

        Several awaits of one run (parallel steps) resumed by one event share one commit.
        """
        if rec.run_id in resumed:
            pending, steps = resumed[rec.run_id]
            run = pending.run
        else:
            loaded = self.store.get_run(rec.run_id)
            if loaded is None:
                return
            run, steps = loaded, self.store.get_steps(rec.run_id)
            pending = _Pending(run)
        srec = steps.get(rec.step)
        if srec is None or srec.status != "awaiting":
            return
        if not spec.matches({**self._scope(run, steps), "event": envelope}):
            return
        step = self._saga(run.saga, run.version).step(rec.step)
        assert isinstance(step, AwaitStep)
        pending.awaits_remove.append((run.id, rec.step))
        self._resume_with(run, steps, step, srec, envelope, pending, now)
        run.status = "running"
        run.wake_at = None
        pending.dirty = True
        resumed[run.id] = (pending, steps)
        # The machine moves that follow are pure (no handler runs): take them in the same
        # commit, so an await that ends its stage, or the saga, costs no extra write.
        compiled = self._compiled_for(run)
        while (next_step := plan(compiled, run, steps, now)).kind == "move":
            assert next_step.event is not None
            self._move(compiled, run, steps, next_step.event, pending, now)

    # -- compensation ----------------------------------------------------------------------

    def _compensate(self, compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
                    name: str, pending: _Pending, now: float) -> None:
        step = compiled.saga.step(name)
        assert isinstance(step, ActionStep)
        assert step.compensate is not None
        rec = steps[name]
        if rec.comp_status != "running":
            rec.comp_attempt += 1
        rec.comp_status = "running"
        rec.wake_at = None
        pending.touch(rec)
        pending.note(now, "compensation.started", name, rec.comp_attempt)
        self._flush(pending)
        completed = rec.status == "succeeded"
        ctx = CompensationContext(
            run_id=run.id, saga=run.saga, step=name, attempt=rec.comp_attempt,
            input=_json_clone(run.input), results=_json_clone(self._results(steps)),
            result=_json_clone(rec.result if completed else rec.checkpoint),
            completed=completed, correlation_id=run.correlation_id, causation_id=run.cause,
            idempotency_key=f"{run.id}:{name}:compensate",
            log=_log.bind(run_id=run.id, saga=run.saga, step=name, compensation=True,
                          attempt=rec.comp_attempt, correlation_id=run.correlation_id,
                          causation_id=run.cause),
            checkpoint_data=rec.checkpoint)
        saga = compiled.saga
        outcome = self._invoke(run, [(self.registry.get_compensation(step.compensate), ctx,
                                      step.timeout or saga.defaults.timeout)])[0]
        now = self.clock.now()
        pending.touch(rec)
        if outcome.ok:
            rec.comp_status = "succeeded"
            rec.comp_error = None
            run.compensated_any = True
            pending.note(now, "compensation.succeeded", name, rec.comp_attempt)
            try:
                self._emit(run, steps, step.emit_on_compensate, pending, now)
            except (EventError, ExpressionError) as exc:
                pending.note(now, "compensation.emit_failed", name, error=str(exc))
            return
        assert outcome.error is not None
        message = _describe(outcome.error)
        policy = (step.compensation_retry or saga.defaults.compensation_retry
                  or DEFAULT_COMPENSATION_RETRY)
        rec.comp_error = message
        if is_retryable(policy, outcome.error) and rec.comp_attempt < policy.attempts:
            delay = backoff_delay(policy, rec.comp_attempt, f"{run.id}:{name}:compensate")
            rec.comp_status = "waiting_retry"
            rec.wake_at = now + delay
            pending.note(now, "compensation.retry_scheduled", name, rec.comp_attempt,
                         error=message, delay=round(delay, 6))
            return
        rec.comp_status = "failed"
        run.error = f"compensation of {name} failed: {message}"
        pending.note(now, "compensation.failed", name, rec.comp_attempt, error=message)

    # -- operator actions ------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str) -> RunView:
        """Stop a run in flight and compensate what it did; it ends ``cancelled``."""
        run = self._get(run_id)
        if run.status not in ACTIVE or not run.state.startswith("run_"):
            raise ConcordiaError(f"run {run_id} is {run.status} ({run.state}); only a run "
                                 "moving forward can be cancelled")
        pending = _Pending(run)
        now = self.clock.now()
        run.cancel_reason = reason
        run.error = f"cancelled: {reason}"
        run.status = "running"
        run.wake_at = None
        pending.note(now, "run.cancel_requested", reason=reason)
        self._flush(pending)
        self.advance(run_id)
        return self.get_run(run_id)

    def retry(self, run_id: str) -> RunView:
        """Resume a run stuck in ``compensation_failed`` (after the cause was fixed)."""
        run = self._get(run_id)
        if run.status != COMPENSATION_FAILED:
            raise ConcordiaError(f"run {run_id} is {run.status}; only a run in "
                                 "compensation_failed can be retried")
        compiled = self._compiled_for(run)
        steps = self.store.get_steps(run_id)
        stuck = [r for r in steps.values() if r.comp_status == "failed"]
        pending = _Pending(run)
        now = self.clock.now()
        stage = max(compiled.stage_of[r.name] for r in stuck) if stuck else 0
        for rec in stuck:
            rec.comp_status = None
            rec.comp_attempt = 0
            pending.touch(rec)
        self._move(compiled, run, steps, f"resume_{stage}", pending, now)
        pending.note(now, "run.retried")
        self._flush(pending)
        self.advance(run_id)
        return self.get_run(run_id)

    # -- events out ------------------------------------------------------------------------

    def _emit(self, run: RunRecord, steps: dict[str, StepRecord], emits: Sequence[Emit],
              pending: _Pending, now: float) -> None:
        """Build and check every event first; add them all or none."""
        if not emits:
            return
        scope = self._scope(run, steps)
        built: list[dict[str, Any]] = []
        for emit in emits:
            payload = {k: compile_expression(v).evaluate(scope) for k, v in emit.payload.items()}
            definition = validate_payload(self.catalog, emit.event, emit.version, payload)
            envelope = new_event(emit.event, payload, source=self.source,
                                 version=definition.version, correlation_id=run.correlation_id,
                                 causation_id=run.cause, subject=run.id, time=_utc(now))
            built.append({"envelope": envelope.to_dict(),
                          "persistent": definition.reliability == "persistent"})
        pending.events.extend(built)
        for item in built:
            env = item["envelope"]
            pending.note(now, "event.emitted", event_id=env["id"], type=env["type"],
                         cause=run.cause)

    def relay_outbox(self, limit: int = 500) -> int:
        """Publish pending persistent events to the bus; return how many."""
        if self.bus is None:
            return 0
        sent = 0
        while True:
            batch = self.store.outbox_pending(limit)
            if not batch:
                return sent
            done = []
            for seq, envelope in batch:
                try:
                    self.bus.publish(envelope)
                except Exception as exc:
                    _log.warning("outbox.publish_failed", event_id=envelope["id"],
                                 error=str(exc))
                    break
                done.append(seq)
            self.store.mark_published(done, self.clock.now())
            sent += len(done)
            if len(done) < len(batch):
                return sent

    def causation_chain(self, event_id: str) -> list[dict[str, Any]]:
        """The event and its causes, oldest first (the trigger → ... → this event)."""
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = event_id
        while current and current not in seen:
            seen.add(current)
            envelope = self.store.get_event(current)
            if envelope is None:
                break
            chain.append(envelope)
            current = envelope.get("causationid")
        chain.reverse()
        return chain

    # -- reading ---------------------------------------------------------------------------

    def _get(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    def get_run(self, run_id: str) -> RunView:
        run = self._get(run_id)
        return self._view(run, self.store.get_steps(run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunView]:
        return [self._view(r, None) for r in self.store.list_runs(status, saga, limit)]

    def _view(self, run: RunRecord, steps: dict[str, StepRecord] | None) -> RunView:
        ordered: list[StepRecord] = []
        history: list[HistoryEntry] = []
        events: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        if steps is not None:
            saga = self._saga(run.saga, run.version)
            ordered = [steps[s.name] for s in saga.steps if s.name in steps]
            history = self.store.history(run.id)
            events = self.store.run_events(run.id)
            decisions = self.store.decisions(run.id)
        return RunView(id=run.id, saga=run.saga, version=run.version, status=run.status,
                       state=run.state, input=run.input, correlation_id=run.correlation_id,
                       causation_id=run.causation_id, error=run.error,
                       created_at=run.created_at, updated_at=run.updated_at,
                       wake_at=run.wake_at, steps=ordered, history=history, events=events,
                       decisions=decisions)

    def _results(self, steps: dict[str, StepRecord]) -> dict[str, Any]:
        return {n: r.result for n, r in steps.items() if r.status == "succeeded"}

    def _scope(self, run: RunRecord, steps: dict[str, StepRecord]) -> dict[str, Any]:
        return {"input": run.input, "results": self._results(steps),
                "run": {"id": run.id, "saga": run.saga, "version": run.version,
                        "correlation_id": run.correlation_id,
                        "causation_id": run.causation_id or "", "error": run.error or ""}}

    def close(self) -> None:
        self._invoker.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def _json_copy(value: Any) -> Any:
    """A JSON round trip: proves the value is serialisable and detaches it from the caller."""
    return json.loads(json.dumps(value, allow_nan=False))


_SCALARS = (str, int, float, bool, type(None))


def _json_clone(value: Any) -> Any:
    """A deep copy of a journaled (JSON) value for a handler, so it cannot change the
    journal; several times faster than ``copy.deepcopy`` on dicts, lists and scalars,
    which is all the journal holds (anything else still goes to ``copy.deepcopy``)."""
    kind = type(value)
    if kind is dict:
        return {k: _json_clone(v) for k, v in value.items()}
    if kind is list:
        return [_json_clone(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name
