"""The ``Store`` protocol every journal backend implements (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from concordia.errors import StoreError
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    Commit,
    HistoryEntry,
    Inbound,
    RunRecord,
    StepRecord,
)


class ConflictError(StoreError):
    """Another writer advanced the run since it was read; reload and try again."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was changed by another writer")


class Store(Protocol):
    """A durable journal of runs. Every write method is one transaction."""

    url: str
    readonly: bool  # opened for reading only: every write raises StoreError
    does_io: bool  # False only for a store an event loop may call inline (in memory)

    # -- writes --------------------------------------------------------------------------------
    def create_run(self, commit: Commit) -> None: ...
    # Write a transition, refused (ConflictError) unless the run is at ``expect_rev``.
    # Sets ``commit.run.rev`` and, if a cancellation was requested meanwhile (the first
    # request wins and is never overwritten), ``commit.run.cancel_reason``. Applies
    # ``commit.wake`` (parents a child's end wakes) in the same transaction, as
    # ``create_run`` and ``apply_delivery`` do for their commits.
    def commit(self, commit: Commit) -> None: ...
    # Record a checkpoint of ``attempt`` of ``step`` unless that attempt is no longer the
    # current one (another attempt started, or another worker holds the run's lease);
    # returns whether it was recorded.
    def save_checkpoint(self, run_id: str, step: str, attempt: int, owner: str, data: Any,
                        at: float) -> bool: ...
    # Ask a run to cancel (the first reason wins). A run no live lease holds becomes due
    # now; a leased one is told at its owner's next commit. Returns the run, or None.
    def request_cancel(self, run_id: str, reason: str, at: float) -> RunRecord | None: ...
    # Halt a run as ``stuck`` with ``error`` (unless another worker holds its lease).
    def park(self, run_id: str, owner: str, error: str, at: float) -> None: ...
    # Extend ``owner``'s leases on these runs; returns the ids it still held.
    def renew_leases(self, owner: str, run_ids: Sequence[str], expires: float) -> list[str]: ...
    # Give up ``owner``'s leases on these runs (a worker stopping, an engine closing).
    def release_leases(self, owner: str, run_ids: Sequence[str]) -> None: ...
    # Clear every lease ``owner`` holds (a worker found dead); returns the runs it held.
    def release_owner(self, owner: str) -> list[str]: ...
    # Run each write in one transaction, each in a savepoint of its own; per write, its
    # result or the exception it raised (a failing commit of the whole fails them all).
    def write_batch(self, fns: Sequence[Callable[[Store], Any]]
                    ) -> list[tuple[Any, BaseException | None]]: ...

    # -- reads ---------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord | None: ...
    # A run with the records of the steps it has touched (others are pending), read
    # together (one consistent revision).
    def load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]] | None: ...
    def get_steps(self, run_id: str) -> dict[str, StepRecord]: ...
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

    # -- events --------------------------------------------------------------------------------
    # Each item atomically, in order (the batch in one transaction where the backend
    # allows); per item "duplicate" (its event, by source and id, is in the inbox
    # already) or "conflict" (a run it resumes changed since it was read), both writing
    # nothing, or "applied".
    def apply_delivery(self, items: Sequence[Inbound]) -> list[str]: ...
    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]: ...
    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]: ...
    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]: ...
    def mark_published(self, ids: Sequence[int], at: float) -> None: ...
    def get_event(self, event_id: str) -> dict[str, Any] | None: ...
    def run_events(self, run_id: str) -> list[dict[str, Any]]: ...
    def decisions(self, run_id: str) -> list[dict[str, Any]]: ...

    # -- definitions runs are pinned to --------------------------------------------------------
    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]:
        """Record (saga, version, fingerprint, document) unless already recorded; return
        every recorded (saga, version) -> fingerprint."""
        ...

    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class RunQueries(Protocol):
    """Reads for operators' views (the HTTP API, its page, its metrics), apart from the
    engine's own: pages of runs under filters, counts by saga and status, the outbox
    backlog. Every store implements them beside :class:`Store`."""

    # Runs newest first, filtered by whichever of saga, status and correlation id are
    # given; ``before`` (a run id) continues a listing after that run. Unknown ``before``:
    # an empty page.
    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord]: ...
    # (saga, status, how many runs) for every pair that has runs.
    def run_counts(self) -> list[tuple[str, str, int]]: ...
    # How many persistent events wait in the outbox, and the ``time`` attribute of the
    # oldest of them (None when none waits).
    def outbox_backlog(self) -> tuple[int, str | None]: ...
