"""The journal's records: runs, steps, history entries, awaits, and the commit unit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

# The status sets live in concordia.status; these names stay importable from here.
from concordia.status import (
    ACTIVE,
    ENDED,
    RUN_STATUSES,
    CompStatus,
    RunStatus,
    StepStatus,
)

__all__ = ["ACTIVE", "ENDED", "RUN_STATUSES"]

# The detail of a history line that has none: one shared object, never to be changed.
_NO_DETAIL: dict[str, Any] = {}


@dataclass(slots=True)
class RunRecord:
    """One saga run, pinned to the definition version it started with."""

    id: str
    saga: str
    version: int
    status: RunStatus
    state: str
    input: dict[str, Any]
    correlation_id: str
    causation_id: str | None
    cause: str  # the id the run's next emitted events name as their cause
    created_at: float
    updated_at: float
    wake_at: float | None = None
    error: str | None = None
    cancel_reason: str | None = None
    compensated_any: bool = False
    rev: int = 0
    # The lease: which worker owns the run until when. A worker takes it in the commit
    # that starts a step, renews it while the handler runs and clears it when its pass
    # ends; others leave a run alone until its lease has expired.
    lease_owner: str | None = None
    lease_expires: float | None = None
    # A child saga's run: the run and step that started it (and wait for its end).
    parent_run_id: str | None = None
    parent_step: str | None = None

    def leased_to_other(self, owner: str, now: float) -> bool:
        """Whether another worker holds a lease on this run that has not expired."""
        return (self.lease_owner is not None and self.lease_owner != owner
                and self.lease_expires is not None and self.lease_expires > now)


@dataclass(slots=True)
class StepRecord:
    """The journal of one step: its forward attempts and its compensation."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    result: Any = None
    checkpoint: Any = None
    error: str | None = None
    wake_at: float | None = None
    comp_status: CompStatus | None = None  # None: not started
    comp_attempt: int = 0
    comp_error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # The last failure as structured data ({type, title, status, message, details}; see
    # concordia.runtime.problem), beside ``error``, its one-line text.
    error_detail: dict[str, Any] | None = None
    # The index of the catch entry that matched the failure, if any.
    caught: int | None = None
    # A fan-out's list, evaluated once when the step starts (its items are journaled as
    # steps of their own, named ``<step>[<index>]``).
    items: list[Any] | None = None
    # A fan-out's planning hint, never journaled (0 when read back): how many of its first
    # items are known to have succeeded, so that deciding the next item does not look at
    # every item again. Only ever grows: a succeeded item stays so going forward.
    done_items: int = 0

    @property
    def has_effect(self) -> bool:
        """Whether the world may have changed: a result, or a checkpoint of a partial run."""
        return self.status == StepStatus.SUCCEEDED or self.checkpoint is not None


class HistoryEntry(NamedTuple):
    """An append-only line of a run's history (a tuple: several are made per step)."""

    run_id: str
    at: float
    kind: str
    step: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = _NO_DETAIL


@dataclass(frozen=True, slots=True)
class AwaitRecord:
    """A run suspended on an event type; ``key`` indexes the match expression's run side."""

    run_id: str
    step: str
    event_type: str
    key: str | None
    saga: str
    version: int


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    """An event that arrived before any run awaited it, kept for a while (early callbacks)."""

    event_id: str
    event_type: str
    key: str | None
    envelope: dict[str, Any]
    expires_at: float


@dataclass(slots=True)
class Commit:
    """Everything one transition writes; a store applies it atomically or not at all."""

    run: RunRecord
    steps: list[StepRecord] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    # Emitted events: {"envelope": CloudEvents dict, "persistent": bool}. Persistent ones
    # form the outbox that the relay publishes; all of them make the causation chain.
    events: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    awaits_add: list[AwaitRecord] = field(default_factory=list)
    awaits_remove: list[tuple[str, str]] = field(default_factory=list)
    consume_buffered: list[str] = field(default_factory=list)
    # The early events the writer examined for the awaits it adds: a store refuses the
    # commit (ConflictError) if another one for them was buffered since, so that an
    # event racing the run to its await is never left in the buffer while the run waits.
    buffered_seen: list[str] = field(default_factory=list)
    expect_rev: int | None = None  # optimistic concurrency: the rev the writer read
    # (run id, step) of parents waiting on this run (a child saga) that its end wakes: in
    # the same transaction, the step is made due and the run runnable (its rev moves on,
    # so a writer holding an older copy reloads it). A wake-up is never lost to a crash.
    wake: list[tuple[str, str]] = field(default_factory=list)

    @property
    def plain(self) -> bool:
        """Whether it writes a run's row, steps and history only: nothing in it can fail
        once its run's revision is found current, so it can share a statement with other
        runs' commits, and a store need apply nothing else."""
        return not (self.events or self.decisions or self.awaits_add or self.awaits_remove
                    or self.consume_buffered or self.wake)


# What a store did with one Inbound.
APPLIED, DUPLICATE, CONFLICT = "applied", "duplicate", "conflict"


@dataclass(slots=True)
class Inbound:
    """One inbound event and everything delivering it writes, applied as one unit.

    Its inbox row (the id that makes a redelivery a duplicate), the runs it starts, the
    runs it resumes (each a commit with ``expect_rev``) and its early-event buffer entries
    are written together or not at all, so a crash mid-delivery cannot leave the event
    marked as seen without its effects.
    """

    envelope: dict[str, Any]
    received_at: float
    creates: list[Commit] = field(default_factory=list)
    resumes: list[Commit] = field(default_factory=list)
    buffer: list[BufferedEvent] = field(default_factory=list)
    # The awaits (run id, step) the writer examined: a store refuses to buffer the event
    # (conflict) if another await for it was registered since; the event is planned again.
    awaits_seen: list[tuple[str, str]] = field(default_factory=list)



R = TypeVar("R")


def _cloner(cls: type[R]) -> Callable[[R], R]:
    """A shallow copy for a record dataclass, several times faster than ``copy.copy``
    (which goes through ``__reduce_ex__``); records are copied on every read and write."""
    get = attrgetter(*(f.name for f in dataclasses.fields(cls)))  # type: ignore[arg-type]

    def clone(rec: R) -> R:
        return cls(*get(rec))

    return clone


copy_run = _cloner(RunRecord)
copy_step = _cloner(StepRecord)
