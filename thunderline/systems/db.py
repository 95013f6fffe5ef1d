"""The one SQLite database the simulated systems keep their state in.

Each system owns its own tables (prefixed with its name) but they share one file, so a
test or the demo can open the world and look at everything after a run. The connection
is shared between threads (an engine may call sync handlers from a pool), so every use
goes through one re-entrant lock; writes run in ``BEGIN IMMEDIATE`` transactions so a
second process on the same file waits for the lock instead of failing halfway.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]
Params = Sequence[Any]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with an explicit offset (what the taxonomy's ``datetime`` expects)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def new_id() -> str:
    return str(uuid.uuid4())


class Database:
    """A locked sqlite3 connection with nestable transactions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # isolation_level=None: sqlite3 must not open transactions behind our back; every
        # write below says where its transaction starts and ends.
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._conn.execute("PRAGMA busy_timeout = 30000")
        if self.path != ":memory:" and not self.path.startswith("file::memory:"):
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def create_schema(self, script: str) -> None:
        """Run a ``CREATE ... IF NOT EXISTS`` script (idempotent, so safe on every open)."""
        with self._lock:
            self._conn.executescript(script)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested uses become savepoints that roll back on their own."""
        with self._lock:
            if self._depth == 0:
                begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", ["ROLLBACK"]
            else:
                name = f"sp{self._depth}"
                begin, commit = f"SAVEPOINT {name}", f"RELEASE {name}"
                rollback = [f"ROLLBACK TO {name}", f"RELEASE {name}"]
            self._conn.execute(begin)
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                for statement in rollback:
                    self._conn.execute(statement)
                raise
            self._depth -= 1
            self._conn.execute(commit)

    def rows(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def scalar(self, sql: str, params: Params = ()) -> Any:
        found = self.row(sql, params)
        return None if found is None else found[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
