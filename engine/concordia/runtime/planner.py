"""The pure planner: from a run's journal and the clock, decide what happens next.

No I/O and no handler calls here. :func:`plan` reads a run, its step records and the
compiled machine and returns one :class:`Decision`:

- ``start``: these steps of the current stage start (or re-start after a crash or a due
  retry) now;
- ``compensate``: undo this step now (the planner picks which, in reverse order);
- ``move``: take this event of the compiled machine (``done``, ``fail``, ``cancel``,
  ``undone``, ``stuck``, ``finish_*``): the stage is over, the run compensates or ends;
- ``wait``: nothing to do until ``wake_at`` (a retry timer or an await's deadline), or
  until an event arrives (``suspended``);
- ``end``: the run is over (or halted for an operator).

A stage whose steps use the language's constructs (conditions, catch tables, fan-outs,
child sagas) is planned by :mod:`concordia.runtime.stage_plan`, which adds the decisions
listed in :mod:`concordia.runtime.decision`; a stage without them takes the plain path
below, unchanged.

What happens after a failed attempt (retry after a delay, or give up) is decided by
:func:`concordia.runtime.retry.after_failure`, for actions and compensations alike. The
executor carries decisions out and journals their outcome; both engines share it.
"""

from __future__ import annotations

from concordia.definitions.models import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRY,
    ActionStep,
    RetryPolicy,
    Saga,
    Step,
)
from concordia.machine.compile import CompiledSaga, MoveKind, Phase
from concordia.runtime import stage_plan
from concordia.runtime.decision import END, MOVES, Decision, DecisionKind, undo_finished
from concordia.runtime.stage_plan import needs_compensation, undo_record
from concordia.status import ACTIVE, STARTABLE, STEP_DONE, TIMED_STEP, StepStatus
from concordia.store.records import ItemKey, ItemRecord, RunRecord, StepRecord

__all__ = ["END", "Decision", "DecisionKind", "needs_compensation", "plan", "retry_policy"]


def plan(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
         items: dict[ItemKey, ItemRecord], now: float) -> Decision:
    """The next thing to do for ``run`` (``items``: the records of its fan-outs' items)."""
    if run.status not in ACTIVE:
        return END
    where = compiled.where.get(run.state)
    if where is None:  # an end state
        return END
    phase, index = where
    if not compiled.plain[index]:
        if phase == Phase.FORWARD:
            return stage_plan.forward(compiled, run, steps, items, index, now)
        return stage_plan.undo(compiled, run, steps, items, index, now)
    if phase == Phase.FORWARD:
        return _plan_forward(compiled, run, steps, index, now)
    return _plan_undo(compiled, run, steps, index, now)


def _plan_forward(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
                  index: int, now: float) -> Decision:
    if run.cancel_reason is not None:
        return MOVES[MoveKind.CANCEL]
    ready: list[str] = []
    wake_at: float | None = None
    suspended = False
    done = True
    for name in compiled.stages[index]:
        rec = steps[name]
        status = rec.status
        if status in STEP_DONE:
            continue
        done = False
        if status == StepStatus.FAILED:
            return MOVES[MoveKind.FAIL]
        if status in STARTABLE:
            ready.append(name)
        elif status in TIMED_STEP:
            wake = rec.wake_at
            if wake is not None and wake <= now:
                ready.append(name)
            else:
                suspended |= status == StepStatus.AWAITING
                if wake is not None and (wake_at is None or wake < wake_at):
                    wake_at = wake
    if done:
        return MOVES[MoveKind.DONE]
    if ready:
        return Decision(DecisionKind.START, steps=tuple(ready))
    return Decision(DecisionKind.WAIT, wake_at=wake_at, suspended=suspended)


def _plan_undo(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
               index: int, now: float) -> Decision:
    # Steps of one stage are independent of each other; undo them in reverse list order.
    for name in reversed(compiled.stages[index]):
        rec = steps[name]
        if needs_compensation(compiled, rec):
            decided = undo_record(rec, now)
            if decided is not None:
                return decided
    return undo_finished(run, index)


def retry_policy(saga: Saga, step: Step, *, compensation: bool = False) -> RetryPolicy:
    """The retry policy of a step's attempts (or of its compensation's)."""
    if compensation:
        assert isinstance(step, ActionStep)
        return (step.compensation_retry or saga.defaults.compensation_retry
                or DEFAULT_COMPENSATION_RETRY)
    if isinstance(step, ActionStep):
        return step.retry or saga.defaults.retry or DEFAULT_RETRY
    # Awaits and policy checks are decided once: a timeout or a rejection is final.
    return _NO_RETRY


_NO_RETRY = RetryPolicy(attempts=1)
