"""Child saga steps: start the child, learn its end, undo it.

A child is a run like any other, created with ``parent_run_id``/``parent_step``, the
parent's correlation id, and the parent's cause as its causation. Its id is derived from
the parent's id and the step's name, so creating it again (after a crash between the
child's creation and the parent's commit) finds the one already there.

The parent's step then waits (``awaiting``, no thread, no timer unless the step has a
``timeout``). The commit that ends the child wakes the parent (a
:func:`~concordia.runtime.transitions.wake` patch in that commit): same transaction, so
the wake-up cannot be lost. Woken, the parent reads the child: completed → the step
succeeds with ``{run_id, status, results}``; compensated, failed or cancelled → the step
fails with :class:`~concordia.errors.ChildSagaError` (a catch entry may take it); still
going (a stale wake-up) → it waits on. Past the step's ``timeout`` the child is asked to
cancel and the step fails with a ``TimeoutError``.

Undoing a child (the parent compensates): a completed child is moved by ``revert`` into
its last undo state, so it runs its own compensations in reverse and ends ``cancelled``;
a child still moving forward is cancelled; one already undoing is left to finish. The
parent's compensation waits (``awaiting``) for the child's end, which wakes it again; a
child that ended without completing needs nothing more. A child halted for an operator
(``compensation_failed``, ``stuck``) keeps its parent waiting until it is retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from concordia.definitions.models import SagaStep
from concordia.errors import (
    ChildSagaError,
    EventError,
    ExpressionError,
    InputError,
    UnknownSagaError,
    ValueLimitError,
)
from concordia.machine.compile import Move, MoveKind
from concordia.runtime import transitions
from concordia.runtime.creation import Creator
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow, commit, read, write
from concordia.runtime.items import results_of
from concordia.runtime.journaling import Journaling
from concordia.runtime.kinds.base import Carry, Stop
from concordia.runtime.pending import journal_value
from concordia.runtime.run_pass import RunPass
from concordia.status import ACTIVE, FINAL, CompStatus, Kind, RunStatus, StepStatus
from concordia.store.base import ConflictError
from concordia.store.records import Loaded, RunRecord, StepRecord

_CHILD_IDS = uuid.UUID("6f1c2a8e-3b7d-4e59-9a41-0c5d8e2f7b13")


def child_run_id(run_id: str, step: str) -> str:
    """The id of the child run that ``step`` of run ``run_id`` starts."""
    return str(uuid.uuid5(_CHILD_IDS, f"{run_id}/{step}"))


def child_of(rec: StepRecord) -> str | None:
    """The child run a child saga step started, as journaled on its record."""
    data = rec.checkpoint
    value = data.get("run_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class Children:
    """Child saga steps (see the module docstring)."""

    def __init__(self, journaling: Journaling, creator: Creator) -> None:
        self.j = journaling
        self.creator = creator

    def carries(self) -> Mapping[DecisionKind, Carry]:
        return {DecisionKind.CHILD: self.advance, DecisionKind.UNDO_CHILD: self.undo}

    # -- forward -------------------------------------------------------------------------

    def advance(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        for name in decision.steps:
            step = p.compiled.steps[name]
            assert isinstance(step, SagaStep)
            rec = p.steps[name]
            if rec.status in (StepStatus.PENDING, StepStatus.READY):
                yield from self._start(p, step, rec, now)
            else:
                yield from self._look(p, step, rec, now)
        return None

    def _start(self, p: RunPass, step: SagaStep, rec: StepRecord, now: float) -> Flow[None]:
        j = self.j
        run = p.run
        child_id = child_run_id(run.id, step.name)
        rec.attempt = max(rec.attempt, 1)
        rec.started_at = now
        try:
            saga = j.book.saga(step.saga, step.version)
            data = (dict(run.input) if step.input is None else
                    {k: j.judge.value(step.name, v, run, p.results)
                     for k, v in step.input.items()})
            created = self.creator.new_run(saga, data, run.correlation_id, run.cause,
                                           run_id=child_id, claim=False)
        except (ExpressionError, InputError, UnknownSagaError) as exc:
            j.fail(p, step, rec, exc, now, retry=False)
            return
        child = created.run
        child.parent_run_id, child.parent_step = run.id, step.name
        created.history[0].detail.update(parent_run_id=run.id, parent_step=step.name)
        # ConflictError: created by an earlier pass, which a crash kept from its commit.
        with suppress(ConflictError):
            yield from write(lambda s: s.create(created))
        rec.checkpoint = {"run_id": child_id, "saga": saga.name, "version": saga.version}
        rec.status = StepStatus.AWAITING
        rec.wake_at = now + step.timeout if step.timeout else None
        p.pending.touch(rec)
        p.pending.note(now, Kind.CHILD_STARTED, step.name, rec.attempt, run_id=child_id,
                       saga=saga.name, version=saga.version)
        # A child an earlier pass created may have ended since: its wake-up found this
        # step not yet waiting.
        yield from self._look(p, step, rec, now)

    def _look(self, p: RunPass, step: SagaStep, rec: StepRecord, now: float) -> Flow[None]:
        """Read the child: record its end, or go on waiting (until the step's deadline)."""
        j = self.j
        child_id = child_of(rec) or child_run_id(p.run.id, step.name)
        loaded = yield from read(lambda s: s.load(child_id))
        if loaded is None:
            j.fail(p, step, rec, ChildSagaError(step.saga, child_id, "missing", None), now,
                   retry=False)
            return
        child = loaded.run
        if child.status in FINAL:
            self._ended(p, step, rec, loaded, now)
            return
        deadline = (rec.started_at or now) + step.timeout if step.timeout else None
        if deadline is not None and now >= deadline:
            yield from self._cancel(child, f"run {p.run.id} step {step.name} stopped waiting "
                                           f"after {step.timeout:g}s", now)
            j.fail(p, step, rec, TimeoutError(
                f"child saga {step.saga} (run {child_id}) did not end within "
                f"{step.timeout:g}s; it was asked to cancel"), now, retry=False)
            return
        rec.wake_at = deadline
        p.pending.touch(rec)

    def _ended(self, p: RunPass, step: SagaStep, rec: StepRecord, loaded: Loaded,
               now: float) -> None:
        j = self.j
        child = loaded.run
        p.pending.note(now, Kind.CHILD_ENDED, step.name, rec.attempt, run_id=child.id,
                       status=str(child.status))
        if child.status != RunStatus.COMPLETED:
            j.fail(p, step, rec, ChildSagaError(child.saga, child.id, child.status,
                                                child.error), now, retry=False)
            return
        try:
            rec.result = journal_value(
                {"run_id": child.id, "status": str(child.status),
                 "results": results_of(loaded.steps)}, f"the result of step {step.name}")
            j.succeed(p, step, rec, now)
        except (ValueLimitError, EventError, ExpressionError) as exc:
            rec.result = None
            j.fail(p, step, rec, exc, now, retry=False)

    def _cancel(self, child: RunRecord, reason: str, now: float) -> Flow[None]:
        """Ask a child still moving forward to cancel (a no-op for any other)."""
        compiled = self.j.book.of(child.saga, child.version)
        if (child.status in ACTIVE and child.cancel_reason is None
                and compiled.forward_stage(child.state) is not None):
            self.j.forget(child.id)  # what this engine last wrote of it is stale
            patch = transitions.cancel_request(child.id, reason, now)
            yield from write(lambda s: s.patch(patch))

    # -- undo ----------------------------------------------------------------------------

    def undo(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        name = decision.steps[0]
        rec = p.steps[name]
        child_id = child_of(rec)
        loaded = None if child_id is None else (yield from read(lambda s: s.load(child_id)))
        if loaded is None:  # never created: nothing to undo
            self._undone(p, rec, None, now)
            return None
        child = loaded.run
        reason = f"compensating run {p.run.id} (step {name})"
        if child.status == RunStatus.COMPLETED:
            yield from self._revert(loaded, reason, p.run.id, now)
        elif child.status in FINAL:
            self._undone(p, rec, child, now)
            return None
        else:
            yield from self._cancel(child, reason, now)
        if rec.comp_status != CompStatus.AWAITING:
            rec.comp_attempt += 1
            p.pending.note(now, Kind.COMPENSATION_STARTED, name, rec.comp_attempt,
                           run_id=child.id)
        rec.comp_status = CompStatus.AWAITING
        rec.wake_at = None
        p.pending.touch(rec)
        return None

    def _revert(self, loaded: Loaded, reason: str, parent_id: str, now: float) -> Flow[None]:
        """Move a completed child into its undo: it compensates itself, in reverse."""
        j = self.j
        child = loaded.run
        cp = RunPass.of(loaded, j.book.of(child.saga, child.version))
        child.cancel_reason = reason
        child.error = f"reverted: {reason}"
        cp.pending.note(now, Kind.RUN_REVERT_REQUESTED, reason=reason, parent_run_id=parent_id)
        j.move(cp, Move(MoveKind.REVERT), now)
        change, _ = cp.pending.take(now)
        j.forget(child.id)  # what this engine last wrote of it (completed) is stale
        # ConflictError: moved meanwhile (by this parent's earlier pass); it is looked at
        # again when its end wakes the parent.
        with suppress(ConflictError):
            yield from commit(change)

    def _undone(self, p: RunPass, rec: StepRecord, child: RunRecord | None,
                now: float) -> None:
        rec.comp_status = CompStatus.SUCCEEDED
        rec.comp_error = None
        rec.wake_at = None
        rec.comp_attempt = max(rec.comp_attempt, 1)
        detail: dict[str, Any] = {}
        if child is not None:
            detail = {"run_id": child.id, "status": str(child.status)}
            if child.status in (RunStatus.COMPENSATED, RunStatus.CANCELLED):
                p.run.compensated_any = True
        p.pending.touch(rec)
        p.pending.note(now, Kind.COMPENSATION_SUCCEEDED, rec.name, rec.comp_attempt, **detail)
