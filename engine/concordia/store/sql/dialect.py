"""What the SQL journal asks of a database: a :class:`Dialect` and its transactions
(:class:`Tx`).

The journal (:mod:`concordia.store.sql.journal`) writes its statements once, in SQL both
databases read, with ``?`` for each parameter; a dialect runs them (translating the
placeholders if its driver spells them otherwise), opens connections and transactions,
maps its driver's errors to :class:`~concordia.errors.StoreError`, and supplies the few
things the two databases say differently: a list as one parameter, row locks, byte-wise
ordering of text, telling other processes a run is due. It also writes the core of a
commit (a run's row, its step and item records, its history lines) in the shape that is
cheapest on its database, which is where the two differ most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from concordia.errors import StoreError
from concordia.store.changes import Commit

Row = Sequence[Any]
T = TypeVar("T")


class RetryError(StoreError):
    """The transaction lost a race the database detected (a deadlock, a serialization
    failure): written again from the start, it may well succeed."""


class Tx(Protocol):
    """One transaction on one connection (or, for reads, a connection)."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...
    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...
    # Run a statement; how many rows it changed.
    def run(self, sql: str, args: Sequence[Any] = ()) -> int: ...
    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    # Several statements, and the first row of each (None: none), sent together where the
    # database allows (one round trip instead of one each).
    def each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]: ...
    # Undo what the block wrote if it raises (the transaction goes on).
    def savepoint(self) -> AbstractContextManager[None]: ...
    # A run became due for any worker: tell those listening, once this transaction commits.
    def due(self) -> None: ...
    # Serialise, per event type, registering awaits with buffering early events: each
    # checks the other's table, which only works if they never overlap.
    def serialise(self, event_types: Sequence[str]) -> None: ...


class Dialect(Protocol):
    """A database as the journal uses it."""

    where: str  # how messages name the store ("SQLite store 'runs.db'")
    lock: str  # the clause that locks the rows a SELECT reads ("" where writes serialise)
    skip_locked: str  # the same, passing over rows another transaction holds
    binary: str  # the clause that orders text by code point

    # ``column`` is one of the values of a list passed as one parameter (see ``listed``).
    def among(self, column: str) -> str: ...
    def listed(self, values: Sequence[Any]) -> Any: ...

    def transaction(self) -> AbstractContextManager[Tx]: ...
    # A transaction for a write that is one statement of the journal's, or one call of the
    # dialect's core of commits (a plain commit or creation): a dialect that makes that one
    # statement may spare the round trips of BEGIN and COMMIT, a statement being atomic.
    def alone(self) -> AbstractContextManager[Tx]: ...
    # ``fn`` over a connection for reading (each statement sees what was committed).
    def read(self, fn: Callable[[Tx], T]) -> T: ...

    # A new run's row, records and history; its row key, or None if the id is taken.
    def insert_run(self, tx: Tx, commit: Commit) -> int | None: ...
    # Runs' rows, records and history, each where the run is at its commit's
    # ``expect_rev`` (distinct runs); per commit, (row key, the cancellation stored) or
    # None where its revision had moved on (nothing of it written).
    def update_runs(self, tx: Tx, commits: Sequence[Commit]
                    ) -> list[tuple[int, str | None] | None]: ...
    # Lines appended to a run's history outside a commit (``ended``: the run is over).
    def append_history(self, tx: Tx, num: int, text: str, ended: bool) -> None: ...
    # A run's history texts (see rows.history_text), in order, read in one snapshot.
    def read_history(self, run_id: str) -> list[str]: ...

    def close(self) -> None: ...


# A migration's steps: statements, and the data moves that SQL alone would make awkward.
Step = str | Callable[[Tx], None]
Migrations = list[tuple[int, list[Step]]]


def migrate(tx: Tx, migrations: Migrations, current: int, where: str,
            record: Callable[[Tx, int], object]) -> None:
    """Apply, in ``tx``, the migrations after version ``current``, ``record``-ing each
    version reached; a store of a newer version than any is refused."""
    latest = migrations[-1][0]
    if current > latest:
        raise StoreError(f"{where} has schema version {current}, newer than this Concordia "
                         f"({latest}); upgrade Concordia")
    for version, steps in migrations:
        if version <= current:
            continue
        for step in steps:
            if isinstance(step, str):
                tx.run(step)
            else:
                step(tx)
        record(tx, version)


def readable(current: int, latest: int, where: str) -> None:
    """Refuse to read a store at any version but ``latest``: one opened read-only is read
    as it is, never created nor migrated."""
    if current != latest:
        raise StoreError(f"{where} has schema version {current or 'none'}; this Concordia "
                         f"reads {latest}: open it once read-write (a worker or `concordia "
                         "run`) to create or migrate it")


def upsert(key: Sequence[str], columns: Sequence[str]) -> str:
    """``ON CONFLICT`` clause replacing a row's ``columns`` (both databases read it)."""
    return (f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key))


def expected(c: Commit) -> int:
    """The revision a commit applies at."""
    return c.run.rev if c.expect_rev is None else c.expect_rev

