"""Machine moves and compensation: failing a stage, undoing steps in reverse, finishing."""

from __future__ import annotations

from concordia.definitions.models import (
    DEFAULT_COMPENSATION_RETRY,
    ActionStep,
)
from concordia.errors import (
    EventError,
    ExpressionError,
)
from concordia.machine.compile import COMPENSATION_FAILED, TERMINAL, CompiledSaga
from concordia.runtime.base import EngineBase
from concordia.runtime.context import CompensationContext
from concordia.runtime.pending import Pending, describe, json_clone
from concordia.runtime.retry import backoff_delay, is_retryable
from concordia.store.records import (
    HistoryEntry,
    RunRecord,
    StepRecord,
)


class Compensating(EngineBase):
    """Moves through the compiled machine and runs compensations."""

    def _move(self, compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
              event: str, pending: Pending, now: float) -> None:
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
                       steps: dict[str, StepRecord], pending: Pending, now: float) -> None:
        """Stop the other steps of a failing stage: no new attempts, no waiting."""
        for name in compiled.stages[compiled.stage_of_state(run.state)]:
            rec = steps[name]
            if rec.status == "awaiting":
                pending.awaits_remove.append((run.id, name))
            if rec.status in ("pending", "waiting_retry", "awaiting", "running"):
                rec.status = "abandoned"
                rec.wake_at = None
                pending.touch(rec)

    def _compensate(self, compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
                    name: str, pending: Pending, now: float) -> None:
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
            input=json_clone(run.input), results=json_clone(self._results(steps)),
            result=json_clone(rec.result if completed else rec.checkpoint),
            completed=completed, correlation_id=run.correlation_id, causation_id=run.cause,
            idempotency_key=f"{run.id}:{name}:compensate",
            _log_fields={"run_id": run.id, "saga": run.saga, "step": name,
                         "compensation": True, "attempt": rec.comp_attempt,
                         "correlation_id": run.correlation_id, "causation_id": run.cause},
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
        message = describe(outcome.error)
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

