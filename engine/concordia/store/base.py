"""The journal's interface: what every store does (:class:`Store`), and the capabilities
some stores add, each a protocol checked with ``isinstance``.

- :class:`Store`: applies the changes of :mod:`concordia.store.changes` atomically and
  answers the engine's queries. Memory, SQLite and PostgreSQL are stores.
- :class:`RunQueries`: operators' reads (pages of runs, counts, the outbox backlog); every
  store offers them, the HTTP API uses them.
- :class:`Batching`: several writes in one transaction (what a group commit needs).
- :class:`Claiming`: due runs leased in the statement that picks them (many workers on
  one database, none waiting for another).
- :class:`Listening`: a call when another process makes a run due.

A store passes the contract suite (``tests/store/``) or is not a store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from concordia.errors import StoreError
from concordia.store.changes import (
    Claim,
    Commit,
    Delivered,
    Inbound,
    LeaseChange,
    Patch,
    Patched,
)
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    HistoryEntry,
    Loaded,
    RunRecord,
)

T = TypeVar("T")


class ConflictError(StoreError):
    """Another writer advanced the run since it was read; reload and try again."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was changed by another writer")


@runtime_checkable
class Store(Protocol):
    """A durable journal of runs. Every write is one transaction."""

    url: str
    readonly: bool  # opened for reading only: every write raises StoreError
    does_io: bool  # False only for a store an event loop may call inline (in memory)

    # -- writes --------------------------------------------------------------------------------
    # A new run with its records (ConflictError: the id is taken).
    def create(self, commit: Commit) -> None: ...
    # A run's transition (see Commit): refused with ConflictError unless the run is at
    # ``expect_rev``; sets ``commit.run.rev`` (and ``cancel_reason``, if one was asked).
    def commit(self, commit: Commit) -> None: ...
    # A change to one run where its guards hold (see Patch).
    def patch(self, patch: Patch) -> Patched: ...
    # Leases extended or given up; returns the runs whose lease changed.
    def leases(self, change: LeaseChange) -> list[str]: ...
    # Each item atomically, in order (the batch in one transaction where the backend
    # allows); what was done with each (see Delivered).
    def deliver(self, items: Sequence[Inbound]) -> list[Delivered]: ...
    def mark_published(self, ids: Sequence[int], at: float) -> None: ...
    # Record (saga, version, fingerprint, document) unless already recorded; return every
    # recorded (saga, version) -> fingerprint.
    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]: ...

    # -- reads ---------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def load(self, run_id: str) -> Loaded | None: ...
    def history(self, run_id: str) -> list[HistoryEntry]: ...
    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunRecord]: ...
    # Run ids starting with ``prefix``, in id order (for ids given by unique prefix).
    def find_run_ids(self, prefix: str, limit: int) -> list[str]: ...
    # Runs with work now: running ones, then due timers (earliest first). For ``owner``,
    # never a run whose lease another owner holds, until it expires (None: all of them).
    def due_runs(self, now: float, limit: int, owner: str | None = None) -> list[str]: ...
    # The earliest timer, or lease expiry of a running run (when it is due again).
    def next_wake_at(self) -> float | None: ...
    # Who holds live leases on active runs now, and on how many runs each.
    def lease_holders(self, now: float) -> dict[str, int]: ...
    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]: ...
    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]: ...
    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]: ...
    def get_event(self, event_id: str) -> dict[str, Any] | None: ...
    # The events a run emitted or received, in order.
    def run_events(self, run_id: str) -> list[dict[str, Any]]: ...
    def decisions(self, run_id: str) -> list[dict[str, Any]]: ...
    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


@runtime_checkable
class RunQueries(Protocol):
    """Reads for operators' views (the HTTP API, its page, its metrics), apart from the
    engine's own. Every store offers them."""

    # Runs newest first, filtered by whichever of saga, status and correlation id are
    # given; ``before`` (a run id) continues a listing after that run (None when no such
    # run is stored).
    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord] | None: ...
    # (saga, status, how many runs) for every pair that has runs.
    def run_counts(self) -> list[tuple[str, str, int]]: ...
    # How many persistent events wait in the outbox, and the ``time`` attribute of the
    # oldest of them (None when none waits).
    def outbox_backlog(self) -> tuple[int, str | None]: ...


Write = Callable[[Store], Any]


@runtime_checkable
class Batching(Protocol):
    """Several writes in one transaction and one flush to disk."""

    # Run each write, each undone alone if it fails; per write, its result or the
    # exception it raised (a failure of the transaction itself fails them all).
    def write_batch(self, writes: Sequence[Write]) -> list[tuple[Any, BaseException | None]]:
        ...

    # Several runs' plain commits (Commit.plain) in a handful of statements; per commit,
    # None or the ConflictError that refused it (the others are written all the same).
    def commit_many(self, commits: Sequence[Commit]) -> list[ConflictError | None]: ...


@runtime_checkable
class Claiming(Protocol):
    """Due runs leased to the claimer in the statement that picks them."""

    def claim_due(self, claim: Claim) -> list[str]: ...


@runtime_checkable
class Listening(Protocol):
    """Told when another process makes a run due."""

    # Call ``on_due()`` (from a thread of its own) whenever a commit makes a run due;
    # returns a function that stops listening.
    def listen(self, on_due: Callable[[], None]) -> Callable[[], None]: ...
