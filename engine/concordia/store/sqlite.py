"""The SQLite store, the embedded default: one file, WAL, ``synchronous=FULL``.

Every SQL statement the SQLite backend runs is in this module (the schema and its
migrations in :mod:`concordia.store.sqlite_schema`, applied on open; ``PRAGMA
user_version`` records the last one). Each public write is one transaction (``BEGIN
IMMEDIATE`` … ``COMMIT``), so a process killed at any point leaves either the whole
transition or none of it; :meth:`SqliteStore.write_batch` runs several writes in one
transaction and one ``fsync``, each in a savepoint of its own. Reads use a connection of
their own, so they never wait behind a write's ``fsync``.

Errors of the database's surroundings (a locked or read-only file, a full disk) are
raised as :class:`~concordia.errors.StoreError` with the file's path.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.request import pathname2url

from concordia.errors import StoreError
from concordia.status import ENDED, Kind, StepStatus
from concordia.store.base import ConflictError, Store
from concordia.store.records import (
    APPLIED,
    CONFLICT,
    DUPLICATE,
    AwaitRecord,
    BufferedEvent,
    Commit,
    HistoryEntry,
    Inbound,
    RunRecord,
    StepRecord,
)
from concordia.store.rows import RUN_COLS as _RUN_COLS
from concordia.store.rows import STEP_FIELDS
from concordia.store.rows import dumps as _dumps
from concordia.store.rows import encode as _encode
from concordia.store.rows import history_rows as _history_rows
from concordia.store.rows import run_from as _run_from
from concordia.store.rows import step_from as _step_from
from concordia.store.rows import step_row as _step_row
from concordia.store.rows import steps_from as _steps_from
from concordia.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

MAX_BUFFERED_PER_TYPE = 10_000
# UPDATE … RETURNING and ALTER TABLE … DROP COLUMN arrived in 3.35; the JSON functions
# are built in from 3.38 (and compiled into most earlier builds).
MIN_SQLITE = (3, 35, 0)

# ``tail`` with the JSON array {arg} appended, by text (both are arrays of history lines).
_APPEND_TAIL = ("CASE WHEN tail = '[]' THEN {arg} WHEN {arg} = '[]' THEN tail "
                "ELSE substr(tail, 1, length(tail) - 1) || ',' || substr({arg}, 2) END")
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLS}, tail) VALUES ({', '.join('?' * 21)})"
# A run's input, correlation and causation never change after it is created: not rewritten.
# Status and wake time are set only when they change: SQLite rewrites an index entry for
# every indexed column an UPDATE assigns, even to the same value. A cancellation asked
# for meanwhile is kept (the first reason wins) and returned, so the writer learns of it.
_UPDATE_RUN = ("UPDATE runs SET {queue}state=:state, cause=:cause, updated_at=:updated_at, "
               "error=:error, cancel_reason=COALESCE(cancel_reason, :cancel_reason), "
               "compensated_any=:compensated_any, rev=:rev, lease_owner=:lease_owner, "
               "lease_expires=:lease_expires, tail=" + _APPEND_TAIL.format(arg=":lines")
               + " WHERE id=:id AND rev=:expected RETURNING num, length(tail), cancel_reason")
_UPDATE_RUN_SQL = {queue: _UPDATE_RUN.format(
    queue="status=:status, wake_at=:wake_at, " if queue else "") for queue in (False, True)}
# The same update for a batch of runs (executemany: no RETURNING; the batch read the rows'
# revisions first, under the same write lock).
_UPDATE_MANY = ("UPDATE runs SET {queue}state=?, cause=?, updated_at=?, error=?, "
                "cancel_reason=COALESCE(cancel_reason, ?), compensated_any=?, rev=?, "
                "lease_owner=?, lease_expires=?, tail=" + _APPEND_TAIL.format(arg="?")
                + " WHERE num=?")
_UPDATE_MANY_SQL = {queue: _UPDATE_MANY.format(
    queue="status=?, wake_at=?, " if queue else "") for queue in (False, True)}
_UPSERT_STEP = ("INSERT INTO steps (num, name, record) VALUES (?, ?, ?) "
                "ON CONFLICT (num, name) DO UPDATE SET record=excluded.record")
_CHECKPOINT = STEP_FIELDS.index("checkpoint")
_LOAD = (f"SELECT {_RUN_COLS}, (SELECT json_group_object(name, json(record)) FROM steps "
         "WHERE steps.num = runs.num) FROM runs WHERE id=?")
# A child's end wakes its parent: the run becomes runnable (a new revision, so a writer
# holding an older one reloads it) and the waiting step (forward or undoing) due now.
_WAKE_RUN = ("UPDATE runs SET status='running', wake_at=NULL, rev=rev + 1 WHERE id=? AND "
             "status IN ('running', 'waiting', 'suspended') RETURNING num")
_WAKE_STEP = ("UPDATE steps SET record=json_set(record, '$[5]', ?) WHERE num=? AND name=? "
              "AND (json_extract(record, '$[0]')='awaiting' "
              "OR json_extract(record, '$[6]')='awaiting')")
# A run's history keys run from ``num << 32`` up; the next one follows the largest.
_RUN_SPAN = 1 << 32
_MAX_RUN_NUM = (1 << 31) - 1
# The tail moves to ``history`` when the run ends or outgrows this (it then stays within
# one page with the rest of the row).
TAIL_LIMIT = 2048
# (Named parameters: Python 3.12 deprecates binding numbered ones, ``?1``, by position.)
_SETTLE_TAIL = ("INSERT INTO history (key, entries) SELECT COALESCE((SELECT MAX(key) "
                "FROM history WHERE key BETWEEN :lo AND :hi), :lo - 1) + 1, tail FROM runs "
                "WHERE num=:num AND tail != '[]'")
_INSERT_EVENT = ("INSERT OR IGNORE INTO events (id, source, run_id, type, direction, "
                 "persistent, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)")
_ACTIVE_SQL = "('running', 'waiting', 'suspended')"
# A lease is live while it has not expired; its owner may do as it pleases with the run.
_LEASE_LIVE = "(lease_owner IS NOT NULL AND lease_expires > :now)"
# How many runs' last written (rev, status, wake_at) a store remembers.
_QUEUE_MEMORY = 10_000


def _history_keys(num: int) -> tuple[int, int]:
    """The first and last ``history`` key of the run whose row key is ``num``."""
    low = num * _RUN_SPAN
    return low, low + _RUN_SPAN - 1


class SqliteStore:
    """A :class:`~concordia.store.base.Store` on one SQLite file."""

    does_io = True

    def __init__(self, url: str, *, synchronous: str = "FULL", readonly: bool = False,
                 busy_timeout: float = 30.0) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(f"the SQLite store needs SQLite {'.'.join(map(str, MIN_SQLITE))} "
                             f"or newer (RETURNING, JSON functions); this Python has "
                             f"{sqlite3.sqlite_version}")
        self.url = url
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel or sqlite:////abs
        if not path:
            raise StoreError(f"store URL {url!r} names no file; use sqlite:///runs.db")
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._rlock = threading.RLock()
        self._batching = False
        self._queue: dict[str, tuple[int, str, float | None]] = {}
        if readonly:
            # Reading never creates a store: a missing file is an error naming the path.
            if path == ":memory:" or not os.path.isfile(path):
                raise StoreError(f"no SQLite store at {path!r} (nothing to read)")
        elif path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of SQLite store {path!r}: "
                                 f"{exc.strerror or exc}") from None
        opened: list[sqlite3.Connection] = []
        try:
            self._open(path, readonly, synchronous, busy_timeout, opened)
        except BaseException:
            # A store that fails to open (not a database, read-only, newer schema) leaves
            # no connection behind: Python 3.13 warns of one collected unclosed.
            for conn in opened:
                conn.close()
            raise

    def _open(self, path: str, readonly: bool, synchronous: str, busy_timeout: float,
              opened: list[sqlite3.Connection]) -> None:
        """Connect, check or migrate the schema, and connect the reader; each connection
        made is added to ``opened``."""
        try:
            if readonly:
                uri = "file:" + pathname2url(os.path.abspath(path)) + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                             check_same_thread=False, timeout=busy_timeout)
                opened.append(self._conn)
                self._conn.execute("PRAGMA query_only=ON")
            else:
                self._conn = sqlite3.connect(path, isolation_level=None,
                                             check_same_thread=False, timeout=busy_timeout)
                opened.append(self._conn)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(f"PRAGMA synchronous={synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from None
        if readonly:
            self._check_schema()
        else:
            with self._guard():
                self._migrate()
        # Reads get a connection of their own (WAL lets it read while a write syncs); an
        # in-memory database exists only on its one connection.
        self._rconn = self._conn
        if path != ":memory:" and not readonly:
            try:
                self._rconn = sqlite3.connect(path, isolation_level=None,
                                              check_same_thread=False, timeout=busy_timeout)
                opened.append(self._rconn)
                self._rconn.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from None
        else:
            self._rlock = self._lock

    # -- plumbing ----------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        """``with self._tx() as conn:`` one write transaction (or, inside
        :meth:`write_batch`, part of the batch's)."""
        if self.readonly:
            raise StoreError(f"SQLite store {self.path!r} was opened read-only")
        return _Transaction(self)

    def _guard(self) -> _Guard:
        return _Guard(self.path)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._rlock, self._guard():
            return self._rconn.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self._tx() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StoreError(f"store {self.path!r} has schema version {current}, newer than "
                                 f"this Concordia ({SCHEMA_VERSION}); upgrade Concordia")
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {version}")

    def _check_schema(self) -> None:
        """A store opened read-only is read as it is: never migrated."""
        try:
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read SQLite store {self.path!r}: {exc}") from None
        if current != SCHEMA_VERSION:
            raise StoreError(f"store {self.path!r} has schema version {current}, this "
                             f"Concordia reads {SCHEMA_VERSION}; open it once read-write "
                             "(a worker or `concordia run`) to migrate it")

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def write_batch(self, fns: Sequence[Callable[[Store], Any]]
                    ) -> list[tuple[Any, BaseException | None]]:
        """Several writes in one transaction and one ``fsync``.

        The writes this store offers refuse (ConflictError) before they write anything, so
        the batch needs no savepoint per write. Any other failure undoes the whole
        transaction, and the batch is then written again with a savepoint around each
        write, so that the one failing write does not take the others with it.
        """
        try:
            return self._batch(fns, savepoints=False)
        except _Undone:
            return self._batch(fns, savepoints=True)

    def _batch(self, fns: Sequence[Callable[[Store], Any]], *, savepoints: bool
               ) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        conn = self._conn
        with self._lock:
            try:
                with self._guard():
                    conn.execute("BEGIN IMMEDIATE")
                self._batching = True
                try:
                    for fn in fns:
                        out.append(self._one(conn, fn, savepoints))
                finally:
                    self._batching = False
                with self._guard():
                    conn.execute("COMMIT")
            except _Undone:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._queue.clear()
                raise
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._queue.clear()  # what it remembered writing was not written
                error = exc if isinstance(exc, StoreError) else StoreError(
                    f"SQLite store {self.path!r}: {exc}")
                return [(None, error)] * len(fns)
        return out

    def _one(self, conn: sqlite3.Connection, fn: Callable[[Store], Any], savepoint: bool
             ) -> tuple[Any, BaseException | None]:
        if not savepoint:
            try:
                return fn(self), None
            except ConflictError as exc:  # refused before it wrote anything
                return None, exc
            except Exception:
                raise _Undone() from None
        conn.execute("SAVEPOINT write")
        try:
            value = fn(self)
        except Exception as exc:
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            return None, exc
        conn.execute("RELEASE write")
        return value, None

    # -- writes ------------------------------------------------------------------------------

    def create_run(self, commit: Commit) -> None:
        try:
            with self._tx() as conn:
                self._insert(conn, commit)
        except sqlite3.IntegrityError:
            raise ConflictError(commit.run.id) from None
        self._remember(commit.run)

    def commit(self, commit: Commit) -> None:
        with self._tx() as conn:
            rev = self._update(conn, commit)
        commit.run.rev = rev
        self._remember(commit.run)

    def _insert(self, conn: sqlite3.Connection, commit: Commit) -> None:
        """Write a new run with its step records (at revision 1)."""
        run = commit.run
        run.rev = 1
        num = conn.execute(_INSERT_RUN, (*_run_row(run),
                                         _encode(_history_rows(commit.history)))).lastrowid
        assert num is not None
        if commit.steps:
            conn.executemany(_UPSERT_STEP, [(num, s.name, _encode(_step_row(s)))
                                            for s in commit.steps])
        if run.status in ENDED:
            self._settle(conn, num)
        self._apply(conn, commit)

    def _update(self, conn: sqlite3.Connection, commit: Commit) -> int:
        """Write a transition of an existing run; return its new rev."""
        run = commit.run
        expected = run.rev if commit.expect_rev is None else commit.expect_rev
        # The row's status and wake time are known when this store wrote the revision the
        # writer read (any other writer would have moved the revision on).
        queue = self._queue.get(run.id) != (expected, run.status, run.wake_at)
        if commit.awaits_add and self._unseen_buffered(conn, commit):
            raise ConflictError(run.id)  # refused before anything is written
        row = conn.execute(_UPDATE_RUN_SQL[queue], {
            "status": run.status, "wake_at": run.wake_at, "state": run.state,
            "cause": run.cause, "updated_at": run.updated_at, "error": run.error,
            "cancel_reason": run.cancel_reason, "compensated_any": int(run.compensated_any),
            "rev": expected + 1, "lease_owner": run.lease_owner,
            "lease_expires": run.lease_expires,
            "lines": _encode(_history_rows(commit.history)), "id": run.id,
            "expected": expected}).fetchall()
        if not row:
            raise ConflictError(run.id)
        num, tail, cancel_reason = row[0]
        if cancel_reason is not None:
            run.cancel_reason = cancel_reason
        if commit.steps:
            conn.executemany(_UPSERT_STEP, [(num, s.name, _encode(_step_row(s)))
                                            for s in commit.steps])
        if tail > TAIL_LIMIT or run.status in ENDED:
            self._settle(conn, num)
        self._apply(conn, commit)
        return expected + 1

    def commit_many(self, commits: Sequence[Commit]) -> list[ConflictError | None]:
        """Several runs' transitions in one transaction, with a handful of statements for
        them all instead of a few each (what the async engine's writer sends with many
        runs in flight); per commit, None or the ConflictError that refused it (a
        refused commit writes nothing, and the others are written all the same)."""
        with self._tx() as conn:
            return self._update_many(conn, commits)

    def _update_many(self, conn: sqlite3.Connection, commits: Sequence[Commit]
                     ) -> list[ConflictError | None]:
        ids = [c.run.id for c in commits]
        if len(set(ids)) != len(ids):  # one run twice: its commits must apply in order
            return [self._one_commit(conn, c) for c in commits]
        marks = ", ".join("?" * len(ids))
        rows = {r[0]: r[1:] for r in conn.execute(
            f"SELECT id, num, rev, length(tail), cancel_reason FROM runs WHERE id IN ({marks})",
            ids)}
        out: list[ConflictError | None] = []
        writes: dict[bool, list[tuple[Any, ...]]] = {False: [], True: []}
        steps: list[tuple[Any, ...]] = []
        after: list[tuple[Commit, int, int, bool]] = []
        for commit in commits:
            run = commit.run
            expected = run.rev if commit.expect_rev is None else commit.expect_rev
            row = rows.get(run.id)
            if row is None or row[1] != expected or (
                    commit.awaits_add and self._unseen_buffered(conn, commit)):
                out.append(ConflictError(run.id))  # refused before anything is written
                continue
            num, _, tail, cancel_reason = row
            if cancel_reason is not None:  # asked meanwhile; the first reason wins
                run.cancel_reason = cancel_reason
            lines = _encode(_history_rows(commit.history))
            queue = self._queue.get(run.id) != (expected, run.status, run.wake_at)
            values = (run.state, run.cause, run.updated_at, run.error, run.cancel_reason,
                      int(run.compensated_any), expected + 1, run.lease_owner,
                      run.lease_expires, lines, lines, lines)
            writes[queue].append(((run.status, run.wake_at, *values) if queue else values)
                                 + (num,))
            steps.extend((num, st.name, _encode(_step_row(st))) for st in commit.steps)
            # the tail's length after the append, as the statement computes it
            grown = (len(lines) if tail == 2 else tail if lines == "[]"
                     else tail + len(lines) - 1)
            after.append((commit, num, expected + 1, grown > TAIL_LIMIT or run.status in ENDED))
            out.append(None)
        for queue, params in writes.items():
            if params:
                conn.executemany(_UPDATE_MANY_SQL[queue], params)
        if steps:
            conn.executemany(_UPSERT_STEP, steps)
        for commit, num, rev, settle in after:
            if settle:
                self._settle(conn, num)
            self._apply(conn, commit)
            commit.run.rev = rev
            self._remember(commit.run)
        return out

    def _one_commit(self, conn: sqlite3.Connection, commit: Commit) -> ConflictError | None:
        try:
            commit.run.rev = self._update(conn, commit)
        except ConflictError as exc:
            return exc
        self._remember(commit.run)
        return None

    @staticmethod
    def _settle(conn: sqlite3.Connection, num: int) -> None:
        """Move a run's history tail to ``history``."""
        if num > _MAX_RUN_NUM:  # would overflow the 64-bit history key
            raise StoreError(f"the store holds more than {_MAX_RUN_NUM} runs; archive it")
        lo, hi = _history_keys(num)
        if conn.execute(_SETTLE_TAIL, {"lo": lo, "hi": hi, "num": num}).rowcount:
            conn.execute("UPDATE runs SET tail='[]' WHERE num=?", (num,))

    def _remember(self, run: RunRecord) -> None:
        """Note the queue columns of a revision this store wrote (after its commit)."""
        with self._lock:
            queue = self._queue
            queue.pop(run.id, None)
            queue[run.id] = (run.rev, run.status, run.wake_at)
            if len(queue) > _QUEUE_MEMORY:
                del queue[next(iter(queue))]

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._queue.pop(run_id, None)

    def _apply(self, conn: sqlite3.Connection, c: Commit) -> None:
        """Write what a commit adds besides the run's row: events, decisions, awaits."""
        rid = c.run.id
        for e in c.events:
            env = e["envelope"]
            cur = conn.execute(_INSERT_EVENT, (env["id"], env["source"], rid, env["type"],
                                               "out", int(e["persistent"]), _dumps(env)))
            if e["persistent"] and cur.rowcount:
                conn.execute("INSERT INTO outbox (event) VALUES (?)", (cur.lastrowid,))
        for d in c.decisions:
            conn.execute("INSERT INTO decisions (decision_id, run_id, step, record) "
                         "VALUES (?, ?, ?, ?)", (d["decision_id"], rid, d.get("step"), _dumps(d)))
        if c.awaits_remove:
            conn.executemany("DELETE FROM awaits WHERE run_id=? AND step=?", c.awaits_remove)
        if c.awaits_add:
            conn.executemany(
                "INSERT OR REPLACE INTO awaits (run_id, step, event_type, key, saga, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(a.run_id, a.step, a.event_type, a.key, a.saga, a.version)
                 for a in c.awaits_add])
        if c.consume_buffered:
            conn.executemany("DELETE FROM buffered WHERE event_id=?",
                             [(i,) for i in c.consume_buffered])
        if c.wake:
            self._wake(conn, c.wake, c.run.updated_at)

    def _wake(self, conn: sqlite3.Connection, wake: list[tuple[str, str]], at: float) -> None:
        """Make each parent's waiting step due and the parent runnable (see Commit.wake)."""
        for run_id, step in wake:
            row = conn.execute(_WAKE_RUN, (run_id,)).fetchall()
            if row:
                conn.execute(_WAKE_STEP, (at, row[0][0], step))
                self._forget(run_id)

    def _append_line(self, conn: sqlite3.Connection, num: int, entry: HistoryEntry,
                     ended: bool = False) -> None:
        line = _encode(_history_rows([entry]))
        tail = conn.execute("UPDATE runs SET tail=" + _APPEND_TAIL.format(arg=":line")
                            + " WHERE num=:num RETURNING length(tail)",
                            {"line": line, "num": num}).fetchall()
        if tail and (tail[0][0] > TAIL_LIMIT or ended):
            self._settle(conn, num)

    def save_checkpoint(self, run_id: str, step: str, attempt: int, owner: str, data: Any,
                        at: float) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT r.num, r.lease_owner, r.lease_expires, s.record FROM runs r "
                "LEFT JOIN steps s ON s.num = r.num AND s.name = ? WHERE r.id = ?",
                (step, run_id)).fetchone()
            if row is None or row[3] is None:
                return False
            num, lease_owner, lease_expires, text = row
            record = json.loads(text)
            if (record[0] != StepStatus.RUNNING or record[1] != attempt
                    or (lease_owner is not None and lease_owner != owner
                        and lease_expires is not None and lease_expires > at)):
                return False
            conn.execute("UPDATE steps SET record=json_set(record, ?, json(?)) "
                         "WHERE num=? AND name=?",
                         (f"$[{_CHECKPOINT}]", _dumps(data), num, step))
            self._append_line(conn, num, HistoryEntry(run_id, at, Kind.STEP_CHECKPOINT, step,
                                                      attempt, {"data": data}))
            return True

    def request_cancel(self, run_id: str, reason: str, at: float) -> RunRecord | None:
        with self._tx() as conn:
            row = conn.execute(
                f"UPDATE runs SET cancel_reason=:reason, "
                f"status=CASE WHEN {_LEASE_LIVE} THEN status ELSE 'running' END, "
                f"wake_at=CASE WHEN {_LEASE_LIVE} THEN wake_at ELSE NULL END, "
                f"rev=CASE WHEN {_LEASE_LIVE} THEN rev ELSE rev + 1 END "
                f"WHERE id=:id AND cancel_reason IS NULL AND status IN {_ACTIVE_SQL} "
                f"RETURNING num", {"reason": reason, "now": at, "id": run_id}).fetchall()
            if row:
                self._append_line(conn, row[0][0], HistoryEntry(
                    run_id, at, Kind.RUN_CANCEL_REQUESTED, None, None, {"reason": reason}))
            current = conn.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?",
                                   (run_id,)).fetchone()
        self._forget(run_id)
        return None if current is None else _run_from(current)

    def park(self, run_id: str, owner: str, error: str, at: float) -> None:
        with self._tx() as conn:
            row = conn.execute(
                f"UPDATE runs SET status='stuck', error=:error, wake_at=NULL, "
                f"lease_owner=NULL, lease_expires=NULL, rev=rev + 1, updated_at=:now "
                f"WHERE id=:id AND status IN {_ACTIVE_SQL} AND NOT "
                f"({_LEASE_LIVE} AND lease_owner != :owner) RETURNING num",
                {"error": error, "now": at, "id": run_id, "owner": owner}).fetchall()
            if row:
                self._append_line(conn, row[0][0], HistoryEntry(
                    run_id, at, Kind.RUN_STUCK, None, None, {"error": error}), ended=True)
        self._forget(run_id)

    def renew_leases(self, owner: str, run_ids: Sequence[str], expires: float) -> list[str]:
        if not run_ids:
            return []
        marks = ", ".join("?" * len(run_ids))
        with self._tx() as conn:
            rows = conn.execute(f"UPDATE runs SET lease_expires=? WHERE lease_owner=? AND "
                                f"id IN ({marks}) RETURNING id",
                                (expires, owner, *run_ids)).fetchall()
        return [r[0] for r in rows]

    def release_leases(self, owner: str, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        marks = ", ".join("?" * len(run_ids))
        with self._tx() as conn:
            conn.execute(f"UPDATE runs SET lease_owner=NULL, lease_expires=NULL WHERE "
                         f"lease_owner=? AND id IN ({marks})", (owner, *run_ids))

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,))
        return _run_from(rows[0]) if rows else None

    def load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]] | None:
        rows = self._query(_LOAD, (run_id,))
        return (_run_from(rows[0]), _steps_from(rows[0][-1])) if rows else None

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = self._query("SELECT s.name, s.record FROM steps s JOIN runs r ON r.num = s.num "
                           "WHERE r.id=?", (run_id,))
        return {name: _step_from(name, json.loads(text)) for name, text in rows}

    def history(self, run_id: str) -> list[HistoryEntry]:
        # One read transaction: another process may move the tail to `history` between
        # the two reads, and the snapshot sees the lines exactly once.
        with self._rlock, self._guard():
            self._rconn.execute("BEGIN")
            try:
                row = self._rconn.execute("SELECT num, tail FROM runs WHERE id=?",
                                          (run_id,)).fetchone()
                rows = [] if row is None else self._rconn.execute(
                    "SELECT entries FROM history WHERE key BETWEEN ? AND ? ORDER BY key",
                    _history_keys(row[0])).fetchall()
            finally:
                self._rconn.execute("COMMIT")
        if row is None:
            return []
        return [HistoryEntry(run_id, *entry)
                for text in (*(r[0] for r in rows), row[1]) for entry in json.loads(text)]

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        clauses, args = [], []
        if status is not None:
            clauses.append("status=?")
            args.append(status)
        if saga is not None:
            clauses.append("saga=?")
            args.append(saga)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs {where} ORDER BY num "
                           "LIMIT ?", (*args, limit))
        return [_run_from(r) for r in rows]

    # -- operators' queries (RunQueries) --------------------------------------------------

    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("saga", saga), ("status", status),
                              ("correlation_id", correlation_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if before is not None:
            clauses.append("num < (SELECT num FROM runs WHERE id=?)")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs {where} ORDER BY num DESC LIMIT ?",
                           (*args, limit))
        return [_run_from(r) for r in rows]

    def run_counts(self) -> list[tuple[str, str, int]]:
        rows = self._query("SELECT saga, status, COUNT(*) FROM runs GROUP BY saga, status "
                           "ORDER BY saga, status")
        return [(r[0], r[1], r[2]) for r in rows]

    def outbox_backlog(self) -> tuple[int, str | None]:
        rows = self._query(
            "SELECT COUNT(*), (SELECT json_extract(e.envelope, '$.time') FROM outbox o "
            "JOIN events e ON e.seq = o.event WHERE o.published_at IS NULL ORDER BY o.seq "
            "LIMIT 1) FROM outbox WHERE published_at IS NULL")
        return int(rows[0][0]), rows[0][1]

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range search on the unique index of ids (LIKE would need escaping and a scan).
        rows = self._query("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                           (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def due_runs(self, now: float, limit: int, owner: str | None = None) -> list[str]:
        # Running runs first (in recorded order; ordering by the index's own columns lets
        # SQLite walk the index instead of sorting every running run), leaving those
        # another owner holds a live lease on, then runs whose timer is due, earliest
        # first. Each search stops after ``limit`` rows.
        with self._rlock, self._guard():
            running = self._rconn.execute(
                "SELECT id FROM runs WHERE status='running' AND (:owner IS NULL OR "
                "lease_owner IS NULL OR lease_owner = :owner OR lease_expires <= :now) "
                "ORDER BY wake_at, num LIMIT :limit",
                {"owner": owner, "now": now, "limit": limit}).fetchall()
            timed = self._rconn.execute(
                "SELECT id, wake_at, num FROM runs WHERE status='waiting' AND wake_at <= ? "
                "ORDER BY wake_at, num LIMIT ?", (now, limit)).fetchall()
            timed += self._rconn.execute(
                "SELECT id, wake_at, num FROM runs WHERE status='suspended' AND wake_at <= ? "
                "ORDER BY wake_at, num LIMIT ?", (now, limit)).fetchall()
        timed.sort(key=lambda r: (r[1], r[2]))
        return [r[0] for r in running + timed][:limit]

    def next_wake_at(self) -> float | None:
        # A running run leased to a worker is due again when the lease expires (if that
        # worker died meanwhile, someone else carries it on then).
        rows = self._query(
            "SELECT MIN(w) FROM (SELECT MIN(wake_at) AS w FROM runs WHERE status='waiting' "
            "UNION ALL SELECT MIN(wake_at) FROM runs WHERE status='suspended' "
            "UNION ALL SELECT MIN(lease_expires) FROM runs WHERE status='running')")
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    # -- events ------------------------------------------------------------------------------

    @staticmethod
    def _inbox(conn: sqlite3.Connection, envelope: dict[str, Any], at: float) -> bool:
        cur = conn.execute("INSERT OR IGNORE INTO inbox (source, id, received_at) "
                           "VALUES (?, ?, ?)", (envelope["source"], envelope["id"], at))
        if cur.rowcount == 0:
            return False
        conn.execute(_INSERT_EVENT, (envelope["id"], envelope["source"], None,
                                     envelope["type"], "in", 1, _dumps(envelope)))
        return True

    def apply_delivery(self, items: Sequence[Inbound]) -> list[str]:
        statuses: list[str] = []
        revs: list[list[int]] = []
        with self._tx() as conn:
            for item in items:
                conn.execute("SAVEPOINT delivery")
                status, new_revs = self._deliver(conn, item)
                if status != APPLIED:
                    conn.execute("ROLLBACK TO delivery")
                conn.execute("RELEASE delivery")
                statuses.append(status)
                revs.append(new_revs)
        for item, status, new_revs in zip(items, statuses, revs, strict=True):
            if status == APPLIED:
                for c, rev in zip(item.resumes, new_revs, strict=True):
                    c.run.rev = rev
                    self._remember(c.run)
                for c in item.creates:
                    self._remember(c.run)
        return statuses

    def _deliver(self, conn: sqlite3.Connection, item: Inbound) -> tuple[str, list[int]]:
        if not self._inbox(conn, item.envelope, item.received_at):
            return DUPLICATE, []
        revs: list[int] = []
        try:
            for c in item.resumes:
                revs.append(self._update(conn, c))
            for c in item.creates:
                self._insert(conn, c)
        except (ConflictError, sqlite3.IntegrityError):
            return CONFLICT, []
        seen = set(item.awaits_seen)
        for event in item.buffer:
            if any((r[0], r[1]) not in seen for r in self._awaits(conn, event.event_type,
                                                                   event.key)):
                return CONFLICT, []
            self._buffer(conn, event)
        return APPLIED, revs

    @staticmethod
    def _unseen_buffered(conn: sqlite3.Connection, c: Commit) -> bool:
        """Whether an early event for one of the commit's new awaits was buffered unseen."""
        seen = set(c.buffered_seen)
        for a in c.awaits_add:
            rows = SqliteStore._buffered(conn, "event_id", a.event_type, a.key,
                                         c.run.updated_at)
            if any(r[0] not in seen for r in rows):
                return True
        return False

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        with self._rlock, self._guard():
            rows = self._awaits(self._rconn, event_type, key)
        return sorted(AwaitRecord(*r) for r in rows)  # type: ignore[type-var]

    @staticmethod
    def _awaits(conn: sqlite3.Connection, event_type: str, key: str | None) -> list[Any]:
        cols = "run_id, step, event_type, key, saga, version"
        if key is None:
            return conn.execute(f"SELECT {cols} FROM awaits WHERE event_type=? AND "
                                "key IS NULL", (event_type,)).fetchall()
        # Two index searches: `key=? OR key IS NULL` would scan every await of the type.
        return conn.execute(f"SELECT {cols} FROM awaits WHERE event_type=? AND key=? "
                            f"UNION ALL SELECT {cols} FROM awaits WHERE event_type=? AND "
                            "key IS NULL", (event_type, key, event_type)).fetchall()

    @staticmethod
    def _buffer(conn: sqlite3.Connection, event: BufferedEvent) -> None:
        # Expired events are dropped lazily, when new ones arrive.
        conn.execute("DELETE FROM buffered WHERE event_type=? AND expires_at <= ?",
                     (event.event_type, event.expires_at - 2 * 86400.0 * 365))
        count = conn.execute("SELECT COUNT(*) FROM buffered WHERE event_type=?",
                             (event.event_type,)).fetchone()[0]
        if count >= MAX_BUFFERED_PER_TYPE:
            conn.execute("DELETE FROM buffered WHERE event_id = (SELECT event_id FROM "
                         "buffered WHERE event_type=? ORDER BY expires_at LIMIT 1)",
                         (event.event_type,))
        conn.execute("INSERT OR REPLACE INTO buffered (event_id, event_type, key, envelope, "
                     "expires_at) VALUES (?, ?, ?, ?, ?)",
                     (event.event_id, event.event_type, event.key, _dumps(event.envelope),
                      event.expires_at))

    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]:
        with self._rlock, self._guard():
            rows = self._buffered(self._rconn,
                                  "event_id, event_type, key, envelope, expires_at",
                                  event_type, key, now)
        return [BufferedEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    @staticmethod
    def _buffered(conn: sqlite3.Connection, cols: str, event_type: str, key: str | None,
                  now: float) -> list[Any]:
        if key is None:
            return conn.execute(f"SELECT {cols} FROM buffered WHERE event_type=? AND "
                                "expires_at > ? ORDER BY event_id", (event_type, now)).fetchall()
        return conn.execute(f"SELECT {cols} FROM buffered WHERE event_type=? AND key=? "
                            f"AND expires_at > ? UNION ALL SELECT {cols} FROM buffered "
                            "WHERE event_type=? AND key IS NULL AND expires_at > ? "
                            "ORDER BY event_id", (event_type, key, now, event_type, now)
                            ).fetchall()

    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._query("SELECT o.seq, e.envelope FROM outbox o JOIN events e "
                           "ON e.seq = o.event WHERE o.published_at IS NULL "
                           "ORDER BY o.seq LIMIT ?", (limit,))
        return [(r[0], json.loads(r[1])) for r in rows]

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        if not ids:
            return
        with self._tx() as conn:
            conn.executemany("UPDATE outbox SET published_at=? WHERE seq=?",
                             [(at, i) for i in ids])

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT envelope FROM events WHERE id=? ORDER BY seq LIMIT 1",
                           (event_id,))
        return json.loads(rows[0][0]) if rows else None

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT envelope FROM events WHERE run_id=? ORDER BY seq",
                           (run_id,))
        return [json.loads(r[0]) for r in rows]

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT record FROM decisions WHERE run_id=? ORDER BY rowid",
                           (run_id,))
        return [json.loads(r[0]) for r in rows]

    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]:
        if self.readonly:  # record nothing; report what is recorded
            rows = self._query("SELECT saga, version, fingerprint FROM definitions")
            return {(r[0], r[1]): r[2] for r in rows}
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO definitions (saga, version, fingerprint, "
                             "document) VALUES (?, ?, ?, ?)",
                             [(n, v, f, _dumps(d)) for n, v, f, d in definitions])
            rows = conn.execute("SELECT saga, version, fingerprint FROM definitions").fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None:
        rows = self._query("SELECT document FROM definitions WHERE saga=? AND version=?",
                           (saga, version))
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock, self._rlock:
            if self._rconn is not self._conn:
                self._rconn.close()
            self._conn.close()


class _Undone(Exception):
    """A write in a batch failed after writing: the batch is undone and written again."""


class _Guard:
    """Raise the database's own errors as StoreError naming the file."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if kind is not None and issubclass(kind, sqlite3.DatabaseError) and not issubclass(
                kind, sqlite3.IntegrityError):
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from None


class _Transaction:
    """One write transaction on the store's write connection, under its lock (a class,
    not a generator: it runs for every write)."""

    __slots__ = ("nested", "store")

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.nested = False

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        store._lock.acquire()
        self.nested = store._batching  # inside write_batch: the batch is the transaction
        if not self.nested:
            try:
                store._conn.execute("BEGIN IMMEDIATE")
            except BaseException as exc:
                store._lock.release()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StoreError(f"SQLite store {store.path!r}: {exc}") from None
                raise
        return store._conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        store = self.store
        conn = store._conn
        try:
            if self.nested:
                pass
            elif kind is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:  # SQLite rolls some failures back by itself
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as error:
            if kind is None:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"SQLite store {store.path!r}: {error}") from None
        finally:
            store._lock.release()
        if kind is not None and issubclass(kind, sqlite3.DatabaseError) and not issubclass(
                kind, sqlite3.IntegrityError):
            raise StoreError(f"SQLite store {store.path!r}: {exc}") from None


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return (run.id, run.saga, run.version, run.status, run.state, _dumps(run.input),
            run.correlation_id, run.causation_id, run.cause, run.created_at, run.updated_at,
            run.wake_at, run.error, run.cancel_reason, int(run.compensated_any), run.rev,
            run.lease_owner, run.lease_expires, run.parent_run_id, run.parent_step)


