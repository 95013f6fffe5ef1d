"""Moving a run forward: actions with retries and timeouts, policy checks, awaits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import (
    DEFAULT_RETRY,
    ActionStep,
    AwaitStep,
    PolicyStep,
    RetryPolicy,
)
from concordia.errors import (
    EventError,
    ExpressionError,
    PolicyError,
)
from concordia.machine.compile import CompiledSaga
from concordia.policies import evaluate_policy
from concordia.runtime.context import StepContext
from concordia.runtime.core import plan
from concordia.runtime.invoke import Outcome, StepAbandonedError
from concordia.runtime.pending import Pending, describe, json_clone, json_copy, utc
from concordia.runtime.retry import backoff_delay, is_retryable
from concordia.runtime.undo import Compensating
from concordia.store.records import (
    ACTIVE,
    AwaitRecord,
    RunRecord,
    StepRecord,
)


class Forward(Compensating):
    """Drives runs forward; see :mod:`concordia.runtime.core` for the decisions."""

    def _advance(self, run_id: str) -> None:
        loaded = self.store.load(run_id)
        if loaded is None or loaded[0].status not in ACTIVE:
            return
        run, steps = loaded
        compiled = self._compiled_for(run)
        pending = Pending(run)
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

    def _start_steps(self, compiled: CompiledSaga, run: RunRecord,
                     steps: dict[str, StepRecord], names: Sequence[str], pending: Pending,
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
                if (rec.status == "running" and rec.attempt == 1 and run.id in self._fresh
                        and compiled.stage_of[name] == 0):
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

    def _step_context(self, run: RunRecord, step: ActionStep, rec: StepRecord,
                      results: dict[str, Any]) -> StepContext:
        store, clock = self.store, self.clock
        attempt = rec.attempt

        def save(data: Any) -> None:
            if rec.status != "running" or rec.attempt != attempt:
                # A sync handler abandoned by its timeout runs on in its thread; what it
                # checkpoints now would overwrite a later attempt's progress.
                raise StepAbandonedError(
                    f"attempt {attempt} of {step.name} is over (timed out); not checkpointed")
            data = json_copy(data)
            store.save_checkpoint(run.id, step.name, data, clock.now())
            rec.checkpoint = data

        fields = {"run_id": run.id, "saga": run.saga, "step": step.name,
                  "attempt": rec.attempt, "correlation_id": run.correlation_id,
                  "causation_id": run.cause}
        return StepContext(run_id=run.id, saga=run.saga, step=step.name, attempt=rec.attempt,
                           input=json_clone(run.input), results=json_clone(results),
                           correlation_id=run.correlation_id, causation_id=run.cause,
                           idempotency_key=f"{run.id}:{step.name}", _log_fields=fields,
                           _checkpoint=save, checkpoint_data=rec.checkpoint)

    def _record_attempt(self, run: RunRecord, steps: dict[str, StepRecord], step: ActionStep,
                        rec: StepRecord, outcome: Outcome, pending: Pending,
                        now: float) -> None:
        pending.touch(rec)
        if outcome.ok:
            try:
                value = json_copy(outcome.value)
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
                 pending: Pending, now: float) -> None:
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
                   rec: StepRecord, error: BaseException, pending: Pending, now: float,
                   policy: RetryPolicy | None) -> None:
        message = describe(error)
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
                    rec: StepRecord, pending: Pending, now: float) -> None:
        rec.attempt += 1
        rec.started_at = now
        try:
            scope = self._scope(run, steps)
            inputs = {k: compile_expression(v).evaluate(scope) for k, v in step.input.items()}
            policy = self.catalog.policy(step.policy, step.version)
            record = evaluate_policy(policy, inputs, now=utc(now))
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

    def _start_await(self, run: RunRecord, steps: dict[str, StepRecord], step: AwaitStep,
                     rec: StepRecord, pending: Pending, now: float) -> None:
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
                     rec: StepRecord, envelope: dict[str, Any], pending: Pending,
                     now: float, early: bool = False) -> None:
        rec.result = json_copy(envelope.get("data"))
        run.cause = envelope["id"]  # events after this step are caused by this event
        pending.note(now, "await.resumed", step.name, rec.attempt, event_id=envelope["id"],
                     early=early)
        try:
            self._succeed(run, steps, step, rec, pending, now)
        except (EventError, ExpressionError) as exc:
            self._fail_step(run, step, rec, exc, pending, now, None)

