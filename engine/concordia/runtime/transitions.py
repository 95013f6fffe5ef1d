"""The rules for changing a run outside a pass over it, each built once, as data.

A pass over a run writes :class:`~concordia.store.changes.Commit`\\ s at the revision it
read. Everything else that changes a run — an operator asking it to cancel, the engine
parking it, a child's end waking its parent, a handler's checkpoint, leases taken, kept
and given up — is a :class:`~concordia.store.changes.Patch` or a lease change built here,
with the guards that say when it applies. Stores apply them and hold no rule of their
own, so a rule changes here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concordia.status import ACTIVE, CompStatus, Kind, RunStatus, StepStatus
from concordia.store.changes import (
    AnyOf,
    AttemptIs,
    CancelUnset,
    Claim,
    CompIn,
    LeaseChange,
    NoLiveLease,
    Patch,
    RunField,
    RunIn,
    StepField,
    StepIn,
    StepRef,
)
from concordia.store.records import HistoryEntry

_IN_FLIGHT = RunIn(ACTIVE)
_AWAITING = AnyOf((StepIn(frozenset({StepStatus.AWAITING})),
                   CompIn(frozenset({CompStatus.AWAITING}))))
_RUNNING_STEP = StepIn(frozenset({StepStatus.RUNNING}))


def cancel_request(run_id: str, reason: str, at: float) -> Patch:
    """Ask a run in flight to cancel; the first reason wins. A run no live lease holds
    becomes due now (its revision moves on); a leased one is told at its owner's next
    commit, which hands the reason back."""
    due_now = Patch(run_id, (_IN_FLIGHT, NoLiveLease(None, at)),
                    run={RunField.STATUS: RunStatus.RUNNING, RunField.WAKE_AT: None},
                    bump=True)
    return Patch(run_id, (_IN_FLIGHT, CancelUnset()), run={RunField.CANCEL_REASON: reason},
                 history=(HistoryEntry(run_id, at, Kind.RUN_CANCEL_REQUESTED, None, None,
                                       {"reason": reason}),),
                 then=due_now)


def park(run_id: str, owner: str, error: str, at: float) -> Patch:
    """Halt a run in flight as ``stuck`` with ``error`` (for an operator to ``retry``),
    unless another worker holds a live lease on it."""
    return Patch(run_id, (_IN_FLIGHT, NoLiveLease(owner, at)),
                 run={RunField.STATUS: RunStatus.STUCK, RunField.ERROR: error,
                      RunField.WAKE_AT: None, RunField.LEASE_OWNER: None,
                      RunField.LEASE_EXPIRES: None, RunField.UPDATED_AT: at},
                 history=(HistoryEntry(run_id, at, Kind.RUN_STUCK, None, None,
                                       {"error": error}),),
                 bump=True)


def wake(run_id: str, step: str, at: float) -> Patch:
    """A child saga's end wakes its parent: the parent (if still in flight) becomes
    runnable (its revision moves on, so a writer holding an older copy reloads it) and
    the step waiting on the child (forward or undoing) is due at ``at``."""
    return Patch(run_id, (_IN_FLIGHT,),
                 run={RunField.STATUS: RunStatus.RUNNING, RunField.WAKE_AT: None}, bump=True,
                 then=Patch(run_id, (_AWAITING,), target=step, step={StepField.WAKE_AT: at}))


def checkpoint(run_id: str, target: StepRef, attempt: int, owner: str, data: Any,
               at: float) -> Patch:
    """Record a checkpoint of ``attempt`` of a step (or item), unless that attempt is no
    longer the current one (another attempt started, or another worker holds the run's
    lease)."""
    # History names an item as it is shown (``sync[2]``).
    shown = target if isinstance(target, str) else f"{target[0]}[{target[1]}]"
    return Patch(run_id, (_RUNNING_STEP, AttemptIs(attempt), NoLiveLease(owner, at)),
                 target=target, step={StepField.CHECKPOINT: data},
                 history=(HistoryEntry(run_id, at, Kind.STEP_CHECKPOINT, shown, attempt,
                                       {"data": data}),))


def renew(owner: str, run_ids: Sequence[str], until: float) -> LeaseChange:
    """``owner``'s leases on these runs, extended to ``until``."""
    return LeaseChange(owner, tuple(run_ids), until)


def release(owner: str, run_ids: Sequence[str] | None) -> LeaseChange:
    """``owner``'s leases on these runs (None: on all of them) given up: a worker
    stopping, an engine closing, a worker found dead."""
    return LeaseChange(owner, None if run_ids is None else tuple(run_ids), None)


def claim(owner: str, now: float, limit: int, until: float,
          exclude: Sequence[str] = ()) -> Claim:
    """Up to ``limit`` due runs leased to ``owner`` until ``until``."""
    return Claim(owner, now, limit, until, tuple(exclude))
