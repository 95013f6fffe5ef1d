"""Journaling an attempt's start and end, for a step and for a fan-out item alike: the
status, attempt count, wake time and history line each transition writes, and the retry
decision after a failure (:func:`concordia.runtime.retry.after_failure`)."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from concordia.definitions.models import CatchClause, RetryPolicy, Saga, Step
from concordia.runtime.catching import matching_entry
from concordia.runtime.invoke import HandlerStopError, Outcome
from concordia.runtime.pending import Pending, describe
from concordia.runtime.planner import retry_policy
from concordia.runtime.problem import problem_of
from concordia.runtime.retry import after_failure
from concordia.status import CompStatus, Kind, StepStatus
from concordia.store.records import Attempted, RunRecord

_log = structlog.get_logger("concordia.engine")


def begin_attempt(pending: Pending, rec: Attempted, now: float) -> None:
    """Journal the start of an action's attempt (of a step or of a fan-out item); one
    interrupted by a crash is the same attempt, run again."""
    if rec.status != StepStatus.RUNNING:
        rec.attempt += 1
    rec.status = StepStatus.RUNNING
    rec.wake_at = None
    rec.started_at = now
    pending.touch(rec)
    pending.note(now, Kind.STEP_STARTED, rec.name, rec.attempt)


def failed_attempt(pending: Pending, saga: Saga, step: Step, rec: Attempted,
                   error: BaseException, now: float, *, key: str, retry: bool,
                   catch: Sequence[CatchClause]) -> bool:
    """Journal a failed attempt (of a step or of a fan-out item, ``key`` its retry jitter
    seed): another attempt after the policy's delay, or failed for good (True), caught
    when an entry of ``catch`` takes the error."""
    message = describe(error)
    rec.error = message
    rec.error_detail = problem_of(error)
    pending.touch(rec)
    delay = (after_failure(retry_policy(saga, step), rec.attempt, error, key)
             if retry else None)
    if delay is not None:
        rec.status = StepStatus.WAITING_RETRY
        rec.wake_at = now + delay
        pending.note(now, Kind.STEP_RETRY_SCHEDULED, rec.name, rec.attempt,
                       error=message, delay=round(delay, 6))
        return False
    rec.status = StepStatus.FAILED
    rec.wake_at = None
    rec.finished_at = now
    rec.caught = matching_entry(catch, error, rec.error_detail)
    pending.note(now, Kind.STEP_FAILED, rec.name, rec.attempt, error=message)
    return True


def begin_compensation(pending: Pending, rec: Attempted, now: float) -> None:
    """Journal the start of a compensation's attempt (of a step or of a fan-out item)."""
    if rec.comp_status != CompStatus.RUNNING:
        rec.comp_attempt += 1
    rec.comp_status = CompStatus.RUNNING
    rec.wake_at = None
    pending.touch(rec)
    pending.note(now, Kind.COMPENSATION_STARTED, rec.name, rec.comp_attempt)


def compensation_succeeded(run: RunRecord, rec: Attempted, pending: Pending, now: float
                           ) -> None:
    rec.comp_status = CompStatus.SUCCEEDED
    rec.comp_error = None
    run.compensated_any = True
    pending.note(now, Kind.COMPENSATION_SUCCEEDED, rec.name, rec.comp_attempt)


def compensation_failed(run: RunRecord, rec: Attempted, name: str, outcome: Outcome,
                        policy: RetryPolicy, key: str, pending: Pending, now: float
                        ) -> HandlerStopError | None:
    """Journal a failed compensation attempt (of a step or of one fan-out item): another
    attempt after the policy's delay, or the compensation failed for good. A handler that
    asked the worker to stop gets its stop error back."""
    assert outcome.error is not None
    message = describe(outcome.error)
    rec.comp_error = message
    delay = after_failure(policy, rec.comp_attempt, outcome.error, key)
    if delay is not None:
        rec.comp_status = CompStatus.WAITING_RETRY
        rec.wake_at = now + delay
        pending.note(now, Kind.COMPENSATION_RETRY_SCHEDULED, name, rec.comp_attempt,
                     error=message, delay=round(delay, 6))
    else:
        rec.comp_status = CompStatus.FAILED
        run.error = f"compensation of {name} failed: {message}"
        pending.note(now, Kind.COMPENSATION_FAILED, name, rec.comp_attempt, error=message)
    if outcome.stop:
        _log.error("worker.stop_requested", run_id=run.id, step=name, compensation=True,
                   error=message)
        return stop_error(outcome, run.id, name)
    return None


def stop_error(outcome: Outcome, run_id: str, step: str) -> HandlerStopError:
    """The error that stops the worker, for a handler that raised KeyboardInterrupt or
    SystemExit."""
    error = outcome.error
    raised = error.raised if isinstance(error, HandlerStopError) else error or SystemExit()
    return HandlerStopError(raised, run_id, step)
