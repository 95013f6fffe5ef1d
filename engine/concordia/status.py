"""Every status a run, a step or a compensation can be in, and the journal's history kinds.

Each set is defined once, here. The enums are string-valued (``StrEnum``), so a status is
stored and shown as its plain name (``"running"``) and compares equal to it.

Run statuses:

    running ──────────────┬─► completed          (every step succeeded)
      │  ▲                ├─► compensated        (a step failed; what it did is undone)
      ▼  │                ├─► failed             (a step failed; there was nothing to undo)
    waiting (retry timer) ├─► cancelled          (cancelled; what it did is undone)
    suspended (an event)  ├─► compensation_failed  (a compensation kept failing; retry it)
                          └─► stuck              (the engine could not advance it; retry it)
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands."""

    RUNNING = "running"  # has work now (or is being worked on, under a lease)
    WAITING = "waiting"  # a retry timer
    SUSPENDED = "suspended"  # awaiting an event (maybe with a timeout timer)
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATION_FAILED = "compensation_failed"
    STUCK = "stuck"


# Runs with work ahead of them (now or on a timer or an event).
ACTIVE = frozenset({RunStatus.RUNNING, RunStatus.WAITING, RunStatus.SUSPENDED})
# Runs that are over for good: nothing can move them again.
FINAL = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED,
                   RunStatus.CANCELLED})
# Runs waiting on a timer (a retry's, an await's deadline) or an event.
TIMED_RUN = frozenset({RunStatus.WAITING, RunStatus.SUSPENDED})
# Runs halted for an operator: they move again only through ``engine.retry``.
HALTED = frozenset({RunStatus.COMPENSATION_FAILED, RunStatus.STUCK})
ENDED = FINAL | HALTED
RUN_STATUSES = tuple(RunStatus)


class StepStatus(StrEnum):
    """Where one step of a run stands (its forward attempts)."""

    PENDING = "pending"
    READY = "ready"  # its condition (`if`) held: it starts when the planner says so
    RUNNING = "running"  # an attempt started (durably, before its side effect)
    WAITING_RETRY = "waiting_retry"
    AWAITING = "awaiting"  # an await step, suspended on its event
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CAUGHT = "caught"  # failed for good, and a catch entry took the error: the run goes on
    ABANDONED = "abandoned"  # its stage failed or was cancelled before it finished


# Step statuses in which nothing more happens to the step going forward.
STEP_SETTLED = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED,
                          StepStatus.CAUGHT})
# Steps a stage is done with: the run goes on past them.
STEP_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.CAUGHT})
# Steps with a result later steps read (a caught step's result is its catch mapping's).
WITH_RESULT = frozenset({StepStatus.SUCCEEDED, StepStatus.CAUGHT})
# Steps (and items) the planner starts when their stage is current: never started, or
# started and interrupted (a crash mid-attempt: the same attempt runs again).
STARTABLE = frozenset({StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING})
NOT_STARTED = frozenset({StepStatus.PENDING, StepStatus.READY})
# Steps waiting on a timer: a retry's, or an await's deadline.
TIMED_STEP = frozenset({StepStatus.WAITING_RETRY, StepStatus.AWAITING})
# Steps (and items) still open going forward: what a failing or cancelled stage abandons.
OPEN_STEP = STARTABLE | TIMED_STEP


# Steps (and items) being worked on: an attempt running, a retry due later, an await.
STEP_IN_HAND = frozenset({StepStatus.RUNNING, StepStatus.WAITING_RETRY, StepStatus.AWAITING})


class CompStatus(StrEnum):
    """Where the compensation of one step stands (``None`` while it has not started)."""

    RUNNING = "running"
    WAITING_RETRY = "waiting_retry"
    AWAITING = "awaiting"  # a child saga step's undo: waiting for the child to undo itself
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Compensations being worked on.
COMP_IN_HAND = frozenset({CompStatus.RUNNING, CompStatus.WAITING_RETRY, CompStatus.AWAITING})


class Kind(StrEnum):
    """The kinds of line in a run's history."""

    RUN_STARTED = "run.started"
    RUN_COMPLETED = "run.completed"
    RUN_COMPENSATED = "run.compensated"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_COMPENSATION_FAILED = "run.compensation_failed"
    RUN_STUCK = "run.stuck"
    RUN_CANCEL_REQUESTED = "run.cancel_requested"
    RUN_RETRIED = "run.retried"
    RUN_EMIT_FAILED = "run.emit_failed"
    RUN_REVERT_REQUESTED = "run.revert_requested"  # a parent compensates this completed run
    STATE = "state"  # a move of the compiled machine: {"from", "to", "event"}
    STEP_STARTED = "step.started"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_RETRY_SCHEDULED = "step.retry_scheduled"
    STEP_CHECKPOINT = "step.checkpoint"
    STEP_SKIPPED = "step.skipped"  # its condition was false
    STEP_READY = "step.ready"  # its condition held
    STEP_CAUGHT = "step.caught"  # a catch entry took its error
    STEP_EXPANDED = "step.expanded"  # a fan-out's list, evaluated: {"items": n}
    CHILD_STARTED = "child.started"  # a child saga's run: {"run_id", "saga", "version"}
    CHILD_ENDED = "child.ended"  # {"run_id", "status"}
    COMPENSATION_STARTED = "compensation.started"
    COMPENSATION_SUCCEEDED = "compensation.succeeded"
    COMPENSATION_RETRY_SCHEDULED = "compensation.retry_scheduled"
    COMPENSATION_FAILED = "compensation.failed"
    COMPENSATION_EMIT_FAILED = "compensation.emit_failed"
    EVENT_EMITTED = "event.emitted"
    POLICY_DECIDED = "policy.decided"
    AWAIT_SUSPENDED = "await.suspended"
    AWAIT_RESUMED = "await.resumed"
    AWAIT_TIMEOUT = "await.timeout"


# The history line that records a run reaching each end.
END_KIND = {RunStatus.COMPLETED: Kind.RUN_COMPLETED, RunStatus.COMPENSATED: Kind.RUN_COMPENSATED,
            RunStatus.FAILED: Kind.RUN_FAILED, RunStatus.CANCELLED: Kind.RUN_CANCELLED,
            RunStatus.COMPENSATION_FAILED: Kind.RUN_COMPENSATION_FAILED,
            RunStatus.STUCK: Kind.RUN_STUCK}
