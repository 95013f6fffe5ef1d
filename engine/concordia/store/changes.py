"""What is written to a store: transitions as data, which every store applies atomically.

The runtime decides every change to a run and builds it as one of these; a store checks
the guards and applies the change in one transaction, or refuses it whole. No store
holds a rule of its own (when a run may be cancelled, parked, woken, checkpointed or
leased): each rule is a guard here, evaluated in Python by the in-memory store
(:meth:`Guard.holds`) and translated to SQL by the SQL stores, statuses always passed as
values, never written into SQL.

- :class:`Commit`: a run's transition (a pass over it, its creation), at the revision its
  writer read; with its steps, items, history, events, decisions, awaits, and patches of
  other runs applied with it (a child's end waking its parent).
- :class:`Patch`: a change to a few fields of one run (and of one of its steps or items),
  applied where its guards hold: a cancellation asked for, a run parked, a parent woken,
  a checkpoint recorded. The rules that build them are in
  :mod:`concordia.runtime.transitions`.
- :class:`LeaseChange` and :class:`Claim`: leases renewed, given up or taken.
- :class:`Inbound`: one delivered event and everything it writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    HistoryEntry,
    ItemKey,
    ItemRecord,
    RunRecord,
    StepRecord,
)

# -- guards: what must hold of a run (and one of its steps) for a patch to apply ------------


@dataclass(frozen=True, slots=True)
class RunIn:
    """The run's status is one of these."""

    statuses: frozenset[RunStatus]


@dataclass(frozen=True, slots=True)
class CancelUnset:
    """No cancellation has been asked for the run yet (the first reason is kept)."""


@dataclass(frozen=True, slots=True)
class NoLiveLease:
    """No live lease (unexpired at ``at``) is held on the run by anyone but ``owner``
    (``owner`` None: by anyone at all)."""

    owner: str | None
    at: float


@dataclass(frozen=True, slots=True)
class StepIn:
    """The patched step's (or item's) status is one of these."""

    statuses: frozenset[StepStatus]


@dataclass(frozen=True, slots=True)
class CompIn:
    """The patched step's (or item's) compensation status is one of these."""

    statuses: frozenset[CompStatus]


@dataclass(frozen=True, slots=True)
class AttemptIs:
    """The patched step (or item) is at this attempt."""

    attempt: int


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one of these guards holds."""

    guards: tuple[Guard, ...]


Guard = RunIn | CancelUnset | NoLiveLease | StepIn | CompIn | AttemptIs | AnyOf


def holds(guard: Guard, run: RunRecord, record: StepRecord | ItemRecord | None) -> bool:
    """Whether ``guard`` holds of ``run`` and the patched ``record`` (None: the patch
    names no step, or the step has no record yet, and no step guard can hold). The
    reference meaning of every guard; the SQL stores translate the same data to SQL."""
    match guard:
        case RunIn(statuses):
            return run.status in statuses
        case CancelUnset():
            return run.cancel_reason is None
        case NoLiveLease(owner, at):
            return (run.lease_owner is None or run.lease_owner == owner
                    or run.lease_expires is None or run.lease_expires <= at)
        case AnyOf(guards):
            return any(holds(g, run, record) for g in guards)
        case StepIn(statuses):
            return record is not None and record.status in statuses
        case CompIn(statuses):
            return record is not None and record.comp_status in statuses
        case AttemptIs(attempt):
            return record is not None and record.attempt == attempt
    raise AssertionError(f"not a guard: {guard!r}")  # pragma: no cover


# -- patches ---------------------------------------------------------------------------------


class RunField(StrEnum):
    """The fields of a run a patch may set."""

    STATUS = "status"
    WAKE_AT = "wake_at"
    ERROR = "error"
    CANCEL_REASON = "cancel_reason"
    LEASE_OWNER = "lease_owner"
    LEASE_EXPIRES = "lease_expires"
    UPDATED_AT = "updated_at"


class StepField(StrEnum):
    """The fields of a step (or item) a patch may set."""

    WAKE_AT = "wake_at"
    CHECKPOINT = "checkpoint"


# A step a patch concerns: its name, or an item (its step's name and its index).
StepRef = str | ItemKey


@dataclass(frozen=True, slots=True)
class Patch:
    """A change to one run, applied in one transaction where every guard holds.

    Sets ``run`` fields on the run and ``step`` fields on the record ``target`` names,
    appends ``history`` and, with ``bump``, moves the run's revision on (so a writer
    holding an older copy reloads it before its next commit). ``then`` is applied after
    it, in the same transaction, only if it applied. A guard about a step (``StepIn``,
    ``CompIn``, ``AttemptIs``) concerns ``target``; a patch whose target has no record
    does not apply.
    """

    run_id: str
    guards: tuple[Guard, ...]
    run: Mapping[RunField, Any] = field(default_factory=dict)
    target: StepRef | None = None
    step: Mapping[StepField, Any] = field(default_factory=dict)
    history: tuple[HistoryEntry, ...] = ()
    bump: bool = False
    then: Patch | None = None


@dataclass(frozen=True, slots=True)
class Patched:
    """What a patch did: whether it applied (its ``then`` aside), and the run as it stands
    after the transaction (None: no such run)."""

    applied: bool
    run: RunRecord | None


# -- leases ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseChange:
    """``owner``'s leases on ``run_ids`` (None: on every active run it holds) extended to
    ``expires``, or given up (``expires`` None). Only leases ``owner`` holds change."""

    owner: str
    run_ids: tuple[str, ...] | None
    expires: float | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Take the leases of up to ``limit`` due runs (see :meth:`Store.due_runs`) that no
    other owner holds a live lease on, for ``owner`` until ``until``; ``exclude`` names
    runs to leave out (the claimer's own in flight)."""

    owner: str
    now: float
    limit: int
    until: float
    exclude: tuple[str, ...] = ()


# -- transitions -----------------------------------------------------------------------------


@dataclass(slots=True)
class Commit:
    """Everything one transition of a run writes; a store applies it atomically or not at
    all. Written over an existing run it applies only at revision ``expect_rev`` (else
    :class:`~concordia.store.base.ConflictError`), moves the revision on, keeps a
    cancellation asked for meanwhile (the first reason wins) and hands it back in
    ``run.cancel_reason``."""

    run: RunRecord
    steps: list[StepRecord] = field(default_factory=list)
    items: list[ItemRecord] = field(default_factory=list)
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
    # Patches of other runs applied in the same transaction (a child's end waking its
    # parent, see concordia.runtime.transitions.wake): never lost to a crash between two
    # writes.
    also: list[Patch] = field(default_factory=list)

    @property
    def plain(self) -> bool:
        """Whether it writes a run's row, steps, items and history only: nothing in it can
        fail once its run's revision is found current, so it can share a statement with
        other runs' commits, and a store need apply nothing else."""
        return not (self.events or self.decisions or self.awaits_add or self.awaits_remove
                    or self.consume_buffered or self.also)


class Delivered(StrEnum):
    """What a store did with one :class:`Inbound`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # its event (by source and id) is in the inbox already
    CONFLICT = "conflict"  # a run it resumes changed since it was read: plan it again


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
    # How many early events of one type the buffer keeps: buffering one more drops the
    # one that expires first.
    buffer_limit: int = 10_000
