"""The SQLite dialect: one file, WAL, ``synchronous=FULL``; one write connection, one read
connection (WAL lets it read while a write syncs).

Writes serialise on the file (``BEGIN IMMEDIATE``), so no row is ever locked and no
statement waits for another's. A commit is the run's row (status and wake time assigned
only when they change: SQLite rewrites an index entry for every indexed column an
``UPDATE`` assigns, even to the same value) with the commit's history lines appended to
the row's tail, then one statement per kind of record for all the commits of a batch.
Errors of the database's surroundings (a locked or read-only file, a full disk) are
raised as :class:`~concordia.errors.StoreError` naming the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.request import pathname2url

from concordia.errors import StoreError
from concordia.status import ENDED
from concordia.store.changes import Commit
from concordia.store.sql import rows
from concordia.store.sql.dialect import (
    Row,
    Tx,
    expected,
    migrate,
    readable,
)
from concordia.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")
# UPDATE … RETURNING and ALTER TABLE … DROP COLUMN arrived in 3.35; the JSON functions
# are built in from 3.38 (and compiled into most earlier builds).
MIN_SQLITE = (3, 35, 0)
# The tail moves to ``history`` when the run ends or outgrows this (it then stays within
# one page with the rest of the row).
TAIL_LIMIT = 2048
# A run's history keys run from ``num << 32`` up; the next one follows the largest.
_RUN_SPAN = 1 << 32
_MAX_RUN_NUM = (1 << 31) - 1
# ``tail`` with the JSON array {arg} appended, by text (both are arrays of history lines).
_APPEND = ("CASE WHEN tail = '[]' THEN {arg} WHEN {arg} = '[]' THEN tail "
           "ELSE substr(tail, 1, length(tail) - 1) || ',' || substr({arg}, 2) END")
_INSERT_RUN = (f"INSERT INTO runs ({rows.RUN_COLS}, tail) VALUES "
               f"({', '.join('?' * (len(rows.RUN_COLUMNS) + 1))}) "
               "ON CONFLICT (id) DO NOTHING RETURNING num")
_CHANGES = ", ".join(f"{c} = ?" for c in rows.RUN_CHANGES)
_SET = (f"{_CHANGES}, cancel_reason = COALESCE(cancel_reason, ?), rev = ?, "
        f"tail = {_APPEND.format(arg='?')}")
# Runs by their keys, read first (a batch's): with and without their queue columns.
_UPDATE_RUN = {queue: (f"UPDATE runs SET {'status = ?, wake_at = ?, ' if queue else ''}{_SET} "
                       "WHERE num = ?") for queue in (False, True)}
# One run at its revision, unread: first as if its queue columns were unchanged (most
# commits), which holds only if they are; else with them.
_UPDATE_ONE = {
    False: (f"UPDATE runs SET {_SET} WHERE id = ? AND rev = ? AND status = ? AND wake_at IS ? "
            "RETURNING num, length(tail), cancel_reason"),
    True: (f"UPDATE runs SET status = ?, wake_at = ?, {_SET} WHERE id = ? AND rev = ? "
           "RETURNING num, length(tail), cancel_reason")}
# Records are written whole: a row replaces the one it conflicts with (cheaper, here, than
# an upsert assigning each column).
_STEP = (f"INSERT OR REPLACE INTO steps (run, {', '.join(rows.STEP_COLUMNS)}) VALUES "
         f"({', '.join('?' * (1 + len(rows.STEP_COLUMNS)))})")
_ITEM = (f"INSERT OR REPLACE INTO items (run, {', '.join(rows.ITEM_COLUMNS)}) VALUES "
         f"({', '.join('?' * (1 + len(rows.ITEM_COLUMNS)))})")
# (Plain ``?`` placeholders only: Python 3.12 deprecates numbered ones bound to a sequence.)
_SETTLE = ("INSERT INTO history (key, entries) SELECT COALESCE((SELECT MAX(key) FROM history "
           "WHERE key BETWEEN ? AND ?), ? - 1) + 1, tail FROM runs "
           "WHERE num = ? AND tail != '[]'")


def _history_keys(num: int) -> tuple[int, int]:
    """The first and last ``history`` key of the run whose row key is ``num``."""
    low = num * _RUN_SPAN
    return low, low + _RUN_SPAN - 1


class SqliteTx:
    """Statements on one SQLite connection (the journal's SQL is SQLite's own)."""

    __slots__ = ("conn", "where")

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.conn = conn
        self.where = where

    def _fail(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"{self.where}: {exc}")

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        try:
            row: Row | None = self.conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self.conn.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            if len(rows) == 1:  # executemany costs more for one row than execute
                self.conn.execute(sql, rows[0])
            else:
                self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]:
        return [self.one(sql, args) for sql, args in statements]

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self.run("SAVEPOINT write")
        try:
            yield
        except BaseException:
            self.run("ROLLBACK TO write")
            self.run("RELEASE write")
            raise
        self.run("RELEASE write")

    def due(self) -> None:
        """Nobody listens: workers on one file find due runs by asking."""

    def serialise(self, event_types: Sequence[str]) -> None:
        """Writes are serialised already."""


class SqliteDialect:
    """The journal on one SQLite file (see the module docstring)."""

    lock = ""
    skip_locked = ""
    binary = ""  # text compares byte-wise (UTF-8: code point order) unless told otherwise

    def __init__(self, url: str, *, synchronous: str, readonly: bool,
                 busy_timeout: float) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(f"the SQLite store needs SQLite {'.'.join(map(str, MIN_SQLITE))} "
                             f"or newer (RETURNING, JSON functions); this Python has "
                             f"{sqlite3.sqlite_version}")
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel or sqlite:////abs
        if not path:
            raise StoreError(f"store URL {url!r} names no file; use sqlite:///runs.db")
        self.path = path
        self.where = f"SQLite store {path!r}"
        self._lock = threading.RLock()
        if readonly:
            # Reading never creates a store: a missing file is an error naming the path.
            if path == ":memory:" or not os.path.isfile(path):
                raise StoreError(f"no SQLite store at {path!r} (nothing to read)")
        elif path != ":memory:":
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of SQLite store {path!r}: "
                                 f"{exc.strerror or exc}") from None
        self.conn = self._connect(readonly, busy_timeout)
        # Reads get a connection of their own; an in-memory database exists only on its one.
        self._rconn, self._rlock = self.conn, self._lock
        try:
            if readonly:
                readable(self.schema_version(SqliteTx(self.conn, self.where)),
                         SCHEMA_VERSION, self.where)
            else:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute(f"PRAGMA synchronous={synchronous}")
                self._migrate()
            if path != ":memory:" and not readonly:
                self._rconn, self._rlock = self._connect(True, busy_timeout), threading.RLock()
        except BaseException:
            # A file that is not a store, or one locked past the busy timeout: the caller
            # gets the error, and no connection is left open behind it.
            self.conn.close()
            raise

    def _connect(self, readonly: bool, busy_timeout: float) -> sqlite3.Connection:
        try:
            if readonly and self.path != ":memory:":
                uri = "file:" + pathname2url(os.path.abspath(self.path)) + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=busy_timeout)
                conn.execute("PRAGMA query_only=ON")
                return conn
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from None

    def _migrate(self) -> None:
        with self.transaction() as tx:
            migrate(tx, MIGRATIONS, self.schema_version(tx), self.where,
                    lambda tx, version: tx.run(f"PRAGMA user_version = {version}"))

    @staticmethod
    def schema_version(tx: Tx) -> int:
        row = tx.one("PRAGMA user_version")
        return 0 if row is None else int(row[0])

    def among(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def listed(self, values: Sequence[Any]) -> Any:
        return rows.encode(list(values))

    # -- transactions ------------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn, self._lock, self.where)

    alone = transaction  # the core of a commit is several statements here

    def read(self, fn: Callable[[Tx], T]) -> T:
        with self._rlock:
            return fn(SqliteTx(self._rconn, self.where))

    # -- the core of commits -----------------------------------------------------------------

    def insert_run(self, tx: Tx, commit: Commit) -> int | None:
        row = tx.one(_INSERT_RUN, (*rows.run_values(commit.run),
                                   rows.history_text(commit.history) or "[]"))
        if row is None:
            return None
        num = int(row[0])
        _records(tx, [(num, commit)])
        if commit.run.status in ENDED:
            self._settle(tx, num)
        return num

    def update_runs(self, tx: Tx, commits: Sequence[Commit]
                    ) -> list[tuple[int, str | None] | None]:
        """Read the runs' rows, then update them with a statement for all (two: those
        whose queue columns change and those whose do not), and write their records."""
        if len(commits) == 1:
            return [self._update_one(tx, commits[0])]
        if not commits:
            return []
        found = {r[0]: r[1:] for r in tx.all(
            "SELECT id, num, rev, status, wake_at, length(tail), cancel_reason FROM runs "
            f"WHERE {self.among('id')}", (self.listed([c.run.id for c in commits]),))}
        out: list[tuple[int, str | None] | None] = []
        updates: dict[bool, list[tuple[Any, ...]]] = {False: [], True: []}
        written: list[tuple[int, Commit]] = []
        settle: list[int] = []
        for c in commits:
            run, rev = c.run, expected(c)
            row = found.get(run.id)
            if row is None or row[1] != rev:
                out.append(None)
                continue
            num, _, status, wake_at, tail, cancel_reason = row
            queue = (status, wake_at) != (run.status.value, run.wake_at)
            lines = rows.history_text(c.history) or "[]"
            values = (*rows.change_values(run), run.cancel_reason, rev + 1, lines, lines, lines,
                      num)
            updates[queue].append((run.status.value, run.wake_at, *values) if queue else values)
            written.append((num, c))
            # the tail's length after the append, as the statement computes it
            grown = len(lines) if tail == 2 else tail if lines == "[]" else tail + len(lines) - 1
            if grown > TAIL_LIMIT or run.status in ENDED:
                settle.append(num)
            out.append((num, cancel_reason))
        for queue, params in updates.items():
            if params:
                tx.many(_UPDATE_RUN[queue], params)
        _records(tx, written)
        for num in settle:
            self._settle(tx, num)
        return out

    def _update_one(self, tx: Tx, c: Commit) -> tuple[int, str | None] | None:
        run, rev = c.run, expected(c)
        lines = rows.history_text(c.history) or "[]"
        values = (*rows.change_values(run), run.cancel_reason, rev + 1, lines, lines, lines,
                  run.id, rev)
        queue = (run.status.value, run.wake_at)
        row = tx.one(_UPDATE_ONE[False], (*values, *queue))
        if row is None:
            row = tx.one(_UPDATE_ONE[True], (*queue, *values))
            if row is None:
                return None
        num, tail, cancel_reason = row
        _records(tx, [(num, c)])
        if tail > TAIL_LIMIT or run.status in ENDED:
            self._settle(tx, num)
        return num, cancel_reason

    def append_history(self, tx: Tx, num: int, text: str, ended: bool) -> None:
        row = tx.one(f"UPDATE runs SET tail = {_APPEND.format(arg='?')} WHERE num = ? "
                     "RETURNING length(tail)", (text, text, text, num))
        if row is not None and (row[0] > TAIL_LIMIT or ended):
            self._settle(tx, num)

    @staticmethod
    def _settle(tx: Tx, num: int) -> None:
        """Move a run's history tail to ``history``."""
        if num > _MAX_RUN_NUM:  # would overflow the 64-bit history key
            raise StoreError(f"the store holds more than {_MAX_RUN_NUM} runs; archive it")
        low, high = _history_keys(num)
        if tx.run(_SETTLE, (low, high, low, num)):
            tx.run("UPDATE runs SET tail = '[]' WHERE num = ?", (num,))

    def read_history(self, run_id: str) -> list[str]:
        # One read transaction: another process may move the tail to ``history`` between
        # the two reads, and the snapshot sees the lines exactly once.
        def read(tx: Tx) -> list[str]:
            tx.run("BEGIN")
            try:
                row = tx.one("SELECT num, tail FROM runs WHERE id = ?", (run_id,))
                if row is None:
                    return []
                settled = tx.all("SELECT entries FROM history WHERE key BETWEEN ? AND ? "
                                 "ORDER BY key", _history_keys(row[0]))
            finally:
                tx.run("COMMIT")
            return [*(r[0] for r in settled), row[1]]

        return self.read(read)

    def close(self) -> None:
        with self._lock, self._rlock:
            if self._rconn is not self.conn:
                self._rconn.close()
            self.conn.close()


class _Transaction:
    """One write transaction on the write connection, under its lock (a class, not a
    generator: it runs for every write)."""

    __slots__ = ("lock", "tx")

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, where: str) -> None:
        self.tx = SqliteTx(conn, where)
        self.lock = lock

    def __enter__(self) -> SqliteTx:
        self.lock.acquire()
        try:
            self.tx.run("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.tx

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        conn = self.tx.conn
        try:
            if kind is None:
                self.tx.run("COMMIT")
            elif conn.in_transaction:  # SQLite rolls some failures back by itself
                conn.execute("ROLLBACK")
        except StoreError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self.lock.release()


def _records(tx: Tx, written: Sequence[tuple[int, Commit]]) -> None:
    """The step and item records of commits written (each with its run's key)."""
    steps = [(num, *rows.step_values(s)) for num, c in written for s in c.steps]
    if steps:
        tx.many(_STEP, steps)
    items = [(num, *rows.item_values(i)) for num, c in written for i in c.items]
    if items:
        tx.many(_ITEM, items)
