"""Records for the contract suite: runs, steps, items and commits with few words."""

from __future__ import annotations

from typing import Any

from concordia.status import RunStatus, StepStatus
from concordia.store.base import Store
from concordia.store.changes import Commit
from concordia.store.records import HistoryEntry, ItemRecord, RunRecord, StepRecord

T = 1_800_000_000.0  # "now" in these tests


def run(run_id: str, status: RunStatus = RunStatus.RUNNING, *, wake_at: float | None = None,
        owner: str | None = None, expires: float | None = None, saga: str = "order",
        correlation_id: str = "c-1", **fields: Any) -> RunRecord:
    return RunRecord(id=run_id, saga=saga, version=1, status=status, state="run_0",
                     input={"order": run_id}, correlation_id=correlation_id,
                     causation_id=None, cause=run_id, created_at=T, updated_at=T,
                     wake_at=wake_at, lease_owner=owner, lease_expires=expires, **fields)


def line(run_id: str, kind: str, step: str | None = None, at: float = T,
         **detail: Any) -> HistoryEntry:
    return HistoryEntry(run_id, at, kind, step, 1 if step else None, detail)


def create(store: Store, run_id: str, status: RunStatus = RunStatus.RUNNING, *,
           steps: tuple[StepRecord, ...] = (), items: tuple[ItemRecord, ...] = (),
           **fields: Any) -> RunRecord:
    """A new run (with records, and a first history line) created in ``store``."""
    new = run(run_id, status, **fields)
    store.create(Commit(run=new, steps=list(steps), items=list(items),
                        history=[line(run_id, "run.started")]))
    return new


def step(name: str, status: StepStatus = StepStatus.PENDING, attempt: int = 0,
         **fields: Any) -> StepRecord:
    return StepRecord(name, status, attempt, **fields)


def item(name: str, index: int, status: StepStatus = StepStatus.PENDING, attempt: int = 0,
         **fields: Any) -> ItemRecord:
    return ItemRecord(name, index, status, attempt, **fields)


def advance(store: Store, current: RunRecord, **changes: Any) -> Commit:
    """Commit ``current`` (as last read) with ``changes`` to its fields and records."""
    records = {k: changes.pop(k) for k in ("steps", "items", "history", "events", "decisions",
                                           "awaits_add", "awaits_remove", "consume_buffered",
                                           "buffered_seen", "also") if k in changes}
    for field, value in changes.items():
        setattr(current, field, value)
    commit = Commit(run=current, expect_rev=current.rev, **records)
    store.commit(commit)
    return commit
