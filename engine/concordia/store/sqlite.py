"""The SQLite store, the embedded default: one file, WAL, ``synchronous=FULL``.

Every SQL statement the SQLite backend runs is in this module. Each public method is one
transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so a process killed at any point leaves
either the whole transition or none of it. The schema is built by numbered migrations
applied on open (``PRAGMA user_version`` records the last one).

Layout, shaped by what a durable commit costs: every page a transaction dirties is
written to the WAL and synced, so a step's commit should touch as few pages as possible.
A run's row carries its step records (a JSON object; a commit merges the changed ones with
``json_patch``) and, while the run is active, the tail of its history (lines appended as
text). The tail moves to ``history`` (one row per move, keyed by the run's integer key in
the high 32 bits, so a run's rows are clustered without an index) when it outgrows
``_TAIL_LIMIT`` and when the run ends. A step's commit thus rewrites the run's row: one
page, where a table per kind of record dirtied six or seven.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.request import pathname2url

from concordia.errors import StoreError
from concordia.store.base import ConflictError
from concordia.store.records import (
    APPLIED,
    CONFLICT,
    DUPLICATE,
    ENDED,
    AwaitRecord,
    BufferedEvent,
    Commit,
    HistoryEntry,
    Inbound,
    RunRecord,
    StepRecord,
)

MAX_BUFFERED_PER_TYPE = 10_000
# UPDATE … RETURNING arrived in 3.35; the JSON functions are built in from 3.38 (and
# compiled into most earlier builds).
MIN_SQLITE = (3, 35, 0)

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, saga TEXT NOT NULL, version INTEGER NOT NULL,
            status TEXT NOT NULL, state TEXT NOT NULL, input TEXT NOT NULL,
            correlation_id TEXT NOT NULL, causation_id TEXT, cause TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, wake_at REAL,
            error TEXT, cancel_reason TEXT, compensated_any INTEGER NOT NULL DEFAULT 0,
            rev INTEGER NOT NULL)""",
        "CREATE INDEX runs_status_wake ON runs (status, wake_at)",
        "CREATE INDEX runs_created ON runs (created_at)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
            attempt INTEGER NOT NULL, result TEXT, checkpoint TEXT, error TEXT,
            wake_at REAL, comp_status TEXT, comp_attempt INTEGER NOT NULL, comp_error TEXT,
            started_at REAL, finished_at REAL, PRIMARY KEY (run_id, name)) WITHOUT ROWID""",
        """CREATE TABLE history (
            seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, at REAL NOT NULL,
            kind TEXT NOT NULL, step TEXT, attempt INTEGER, detail TEXT NOT NULL)""",
        "CREATE INDEX history_run ON history (run_id, seq)",
        """CREATE TABLE events (
            id TEXT PRIMARY KEY, run_id TEXT, type TEXT NOT NULL, direction TEXT NOT NULL,
            persistent INTEGER NOT NULL, envelope TEXT NOT NULL)""",
        "CREATE INDEX events_run ON events (run_id)",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL,
            published_at REAL)""",
        "CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL",
        "CREATE TABLE inbox (id TEXT PRIMARY KEY, received_at REAL NOT NULL) WITHOUT ROWID",
        """CREATE TABLE awaits (
            run_id TEXT NOT NULL, step TEXT NOT NULL, event_type TEXT NOT NULL, key TEXT,
            saga TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (run_id, step))
            WITHOUT ROWID""",
        "CREATE INDEX awaits_lookup ON awaits (event_type, key)",
        """CREATE TABLE buffered (
            event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL, key TEXT,
            envelope TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX buffered_lookup ON buffered (event_type, key, expires_at)",
        """CREATE TABLE decisions (
            decision_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, step TEXT,
            record TEXT NOT NULL)""",
        "CREATE INDEX decisions_run ON decisions (run_id)",
    ]),
    # 2: each saga version runs have used, so runs outlive their YAML and an in-place
    # edit of a version in use is caught.
    (2, [
        """CREATE TABLE definitions (
            saga TEXT NOT NULL, version INTEGER NOT NULL, fingerprint TEXT NOT NULL,
            document TEXT NOT NULL, PRIMARY KEY (saga, version)) WITHOUT ROWID""",
    ]),
    # 3: fewer pages per commit. Runs get an explicit integer key (VACUUM keeps it, and it
    # orders runs as they were recorded, so ``created_at`` needs no index); a run carries its
    # step records and, while it is active, the tail of its history. Settled history is one
    # row per flush whose key is the run's key in its high 32 bits: a run's lines are
    # clustered without an index.
    (3, [
        """CREATE TABLE runs_v3 (
            num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, saga TEXT NOT NULL,
            version INTEGER NOT NULL, status TEXT NOT NULL, state TEXT NOT NULL,
            input TEXT NOT NULL, correlation_id TEXT NOT NULL, causation_id TEXT,
            cause TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            wake_at REAL, error TEXT, cancel_reason TEXT,
            compensated_any INTEGER NOT NULL DEFAULT 0, rev INTEGER NOT NULL,
            steps TEXT NOT NULL, tail TEXT NOT NULL DEFAULT '[]')""",
        """INSERT INTO runs_v3 SELECT r.rowid, r.id, r.saga, r.version, r.status, r.state,
            r.input, r.correlation_id, r.causation_id, r.cause, r.created_at, r.updated_at,
            r.wake_at, r.error, r.cancel_reason, r.compensated_any, r.rev,
            COALESCE((SELECT json_group_object(s.name, json_array(s.status, s.attempt,
                json(s.result), json(s.checkpoint), s.error, s.wake_at, s.comp_status,
                s.comp_attempt, s.comp_error, s.started_at, s.finished_at))
                FROM steps s WHERE s.run_id = r.id), '{}'),
            '[]' FROM runs r ORDER BY r.rowid""",
        """CREATE TABLE history_v3 (key INTEGER PRIMARY KEY, entries TEXT NOT NULL)""",
        """INSERT INTO history_v3 (key, entries) SELECT (r.num << 32) + ROW_NUMBER() OVER (
                PARTITION BY h.run_id ORDER BY h.seq) - 1,
            json_array(json_array(h.at, h.kind, h.step, h.attempt, json(h.detail)))
            FROM history h JOIN runs_v3 r ON r.id = h.run_id""",
        "DROP TABLE history",
        "DROP TABLE steps",
        "DROP TABLE runs",
        "ALTER TABLE runs_v3 RENAME TO runs",
        "ALTER TABLE history_v3 RENAME TO history",
        "CREATE INDEX runs_status_wake ON runs (status, wake_at)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_RUN_COLS = ("id, saga, version, status, state, input, correlation_id, causation_id, cause, "
             "created_at, updated_at, wake_at, error, cancel_reason, compensated_any, rev")
# ``tail`` with the JSON array {arg} appended, by text (both are arrays of history lines).
_APPEND_TAIL = ("CASE WHEN tail = '[]' THEN {arg} WHEN {arg} = '[]' THEN tail "
                "ELSE substr(tail, 1, length(tail) - 1) || ',' || substr({arg}, 2) END")
_INSERT_RUN = (f"INSERT INTO runs ({_RUN_COLS}, steps, tail) VALUES ({', '.join('?' * 18)})")
# A run's input, correlation and causation never change after it is created: not rewritten.
# Status and wake time are set only when they change: SQLite rewrites an index entry for
# every indexed column an UPDATE assigns, even to the same value. Changed step records are
# merged into ``steps`` (RFC 7396: a record, a JSON array, replaces the old one whole), and
# the commit's history lines are appended to ``tail`` as text (no JSON parse).
_UPDATE_RUN = ("UPDATE runs SET {queue}state=:state, cause=:cause, updated_at=:updated_at, "
               "error=:error, cancel_reason=:cancel_reason, compensated_any=:compensated_any, "
               "rev=:rev, steps=json_patch(steps, :steps), tail="
               + _APPEND_TAIL.format(arg=":lines")
               + " WHERE id=:id AND rev=:expected RETURNING num, length(tail)")
_UPDATE_RUN_SQL = {queue: _UPDATE_RUN.format(
    queue="status=:status, wake_at=:wake_at, " if queue else "") for queue in (False, True)}
# A step record in the run's ``steps`` object: a JSON array in this field order (compact,
# and the cheapest shape to write and read).
_STEP_FIELDS = ("status", "attempt", "result", "checkpoint", "error", "wake_at", "comp_status",
                "comp_attempt", "comp_error", "started_at", "finished_at")
_CHECKPOINT = _STEP_FIELDS.index("checkpoint")
_ATTEMPT = _STEP_FIELDS.index("attempt")
# A run's history keys run from ``num << 32`` up; the next one follows the largest.
_RUN_SPAN = 1 << 32
_MAX_RUN_NUM = (1 << 31) - 1
# The tail moves to ``history`` when the run ends or outgrows this (it then stays within
# one page with the rest of the row, so a commit rewrites a single page).
_TAIL_LIMIT = 2048
_SETTLE_TAIL = ("INSERT INTO history (key, entries) SELECT COALESCE((SELECT MAX(key) "
                "FROM history WHERE key BETWEEN ?1 AND ?2), ?1 - 1) + 1, tail FROM runs "
                "WHERE num=?3 AND tail != '[]'")
_INSERT_EVENT = ("INSERT OR IGNORE INTO events (id, run_id, type, direction, persistent, envelope)"
                 " VALUES (?, ?, ?, ?, ?, ?)")
# How many runs' last written (rev, status, wake_at) a store remembers.
_QUEUE_MEMORY = 10_000
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _history_keys(num: int) -> tuple[int, int]:
    """The first and last ``history`` key of the run whose row key is ``num``."""
    low = num * _RUN_SPAN
    return low, low + _RUN_SPAN - 1


def _step_path(name: str) -> str:
    # Step names are identifiers (``^[a-z][a-z0-9_]*$``), so quoting cannot be broken.
    return f'$."{name}"'


def _step_row(s: StepRecord) -> list[Any]:
    return [s.status, s.attempt, s.result, s.checkpoint, s.error, s.wake_at, s.comp_status,
            s.comp_attempt, s.comp_error, s.started_at, s.finished_at]


def _history_rows(history: Sequence[HistoryEntry]) -> list[list[Any]]:
    return [[h.at, h.kind, h.step, h.attempt, h.detail] for h in history]


def _dumps(value: Any) -> str | None:
    return None if value is None else _encode(value)


class SqliteStore:
    """A :class:`~concordia.store.base.Store` on one SQLite file."""

    def __init__(self, url: str, *, synchronous: str = "FULL", readonly: bool = False) -> None:
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
        try:
            if readonly:
                uri = "file:" + pathname2url(os.path.abspath(path)) + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                             check_same_thread=False, timeout=30.0)
                self._conn.execute("PRAGMA query_only=ON")
            else:
                self._conn = sqlite3.connect(path, isolation_level=None,
                                             check_same_thread=False, timeout=30.0)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from None
        self._lock = threading.RLock()
        self._queue: dict[str, tuple[int, str, float | None]] = {}
        if readonly:
            self._check_schema()
        else:
            self._migrate()

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

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
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

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
        steps = _encode({s.name: _step_row(s) for s in commit.steps})
        num = conn.execute(_INSERT_RUN, (*_run_row(run), steps,
                                         _encode(_history_rows(commit.history)))).lastrowid
        assert num is not None
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
        row = conn.execute(_UPDATE_RUN_SQL[queue], {
            "status": run.status, "wake_at": run.wake_at, "state": run.state,
            "cause": run.cause, "updated_at": run.updated_at, "error": run.error,
            "cancel_reason": run.cancel_reason, "compensated_any": int(run.compensated_any),
            "rev": expected + 1, "steps": _encode({s.name: _step_row(s) for s in commit.steps}),
            "lines": _encode(_history_rows(commit.history)), "id": run.id,
            "expected": expected}).fetchall()
        if not row:
            raise ConflictError(run.id)
        num, tail = row[0]
        if tail > _TAIL_LIMIT or run.status in ENDED:
            self._settle(conn, num)
        self._apply(conn, commit)
        return expected + 1

    @staticmethod
    def _settle(conn: sqlite3.Connection, num: int) -> None:
        """Move a run's history tail to ``history``."""
        if num > _MAX_RUN_NUM:  # would overflow the 64-bit history key
            raise StoreError(f"the store holds more than {_MAX_RUN_NUM} runs; archive it")
        if conn.execute(_SETTLE_TAIL, (*_history_keys(num), num)).rowcount:
            conn.execute("UPDATE runs SET tail='[]' WHERE num=?", (num,))

    def _remember(self, run: RunRecord) -> None:
        """Note the queue columns of a revision this store wrote (after its commit)."""
        with self._lock:
            queue = self._queue
            queue.pop(run.id, None)
            queue[run.id] = (run.rev, run.status, run.wake_at)
            if len(queue) > _QUEUE_MEMORY:
                del queue[next(iter(queue))]

    def _apply(self, conn: sqlite3.Connection, c: Commit) -> None:
        """Write what a commit adds besides the run's row: events, decisions, awaits."""
        rid = c.run.id
        for e in c.events:
            env = e["envelope"]
            conn.execute(_INSERT_EVENT, (env["id"], rid, env["type"], "out",
                                         int(e["persistent"]), _dumps(env)))
            if e["persistent"]:
                conn.execute("INSERT INTO outbox (event_id) VALUES (?)", (env["id"],))
        for d in c.decisions:
            conn.execute("INSERT INTO decisions (decision_id, run_id, step, record) "
                         "VALUES (?, ?, ?, ?)", (d["decision_id"], rid, d.get("step"), _dumps(d)))
        if c.awaits_remove:
            conn.executemany("DELETE FROM awaits WHERE run_id=? AND step=?", c.awaits_remove)
        if c.awaits_add:
            if self._unseen_buffered(conn, c):
                raise ConflictError(rid)
            conn.executemany(
                "INSERT OR REPLACE INTO awaits (run_id, step, event_type, key, saga, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(a.run_id, a.step, a.event_type, a.key, a.saga, a.version)
                 for a in c.awaits_add])
        if c.consume_buffered:
            conn.executemany("DELETE FROM buffered WHERE event_id=?",
                             [(i,) for i in c.consume_buffered])

    def save_checkpoint(self, run_id: str, step: str, data: Any, at: float) -> None:
        path = _step_path(step)
        with self._tx() as conn:
            row = conn.execute("SELECT num, json_extract(steps, ?) FROM runs WHERE id=?",
                               (f"{path}[{_ATTEMPT}]", run_id)).fetchone()
            if row is None:
                return
            num, attempt = row
            line = _encode(_history_rows([HistoryEntry(run_id, at, "step.checkpoint", step,
                                                       attempt, {"data": data})]))
            tail = conn.execute(
                "UPDATE runs SET steps=json_set(steps, ?, json(?)), tail="
                + _APPEND_TAIL.format(arg="?3") + " WHERE num=? RETURNING length(tail)",
                (f"{path}[{_CHECKPOINT}]", _dumps(data), line, num)).fetchall()[0][0]
            if tail > _TAIL_LIMIT:
                self._settle(conn, num)

    # -- reads -------------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,))
        return _run_from(rows[0]) if rows else None

    def load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]] | None:
        rows = self._query(f"SELECT {_RUN_COLS}, steps FROM runs WHERE id=?", (run_id,))
        return (_run_from(rows[0]), _steps_from(rows[0][-1])) if rows else None

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = self._query("SELECT steps FROM runs WHERE id=?", (run_id,))
        return _steps_from(rows[0][0]) if rows else {}

    def history(self, run_id: str) -> list[HistoryEntry]:
        # One read transaction: another process may move the tail to `history` between
        # the two reads, and the snapshot sees the lines exactly once.
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                row = self._conn.execute("SELECT num, tail FROM runs WHERE id=?",
                                         (run_id,)).fetchone()
                rows = [] if row is None else self._conn.execute(
                    "SELECT entries FROM history WHERE key BETWEEN ? AND ? ORDER BY key",
                    _history_keys(row[0])).fetchall()
            finally:
                self._conn.execute("COMMIT")
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

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range search on the unique index of ids (LIKE would need escaping and a scan).
        rows = self._query("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                           (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def due_runs(self, now: float, limit: int) -> list[str]:
        # Running runs first (in recorded order; ordering by the index's own columns lets
        # SQLite walk the index instead of sorting every running run), then runs whose
        # timer is due, earliest first. Each search stops after ``limit`` rows.
        with self._lock:
            running = self._conn.execute(
                "SELECT id FROM runs WHERE status='running' ORDER BY wake_at, num LIMIT ?",
                (limit,)).fetchall()
            timed = self._conn.execute(
                "SELECT id, wake_at, num FROM runs WHERE status='waiting' AND wake_at <= ? "
                "ORDER BY wake_at, num LIMIT ?", (now, limit)).fetchall()
            timed += self._conn.execute(
                "SELECT id, wake_at, num FROM runs WHERE status='suspended' AND wake_at <= ? "
                "ORDER BY wake_at, num LIMIT ?", (now, limit)).fetchall()
        timed.sort(key=lambda r: (r[1], r[2]))
        return [r[0] for r in running + timed][:limit]

    def next_wake_at(self) -> float | None:
        rows = self._query(
            "SELECT MIN(w) FROM (SELECT MIN(wake_at) AS w FROM runs WHERE status='waiting' "
            "UNION ALL SELECT MIN(wake_at) FROM runs WHERE status='suspended')")
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    # -- events ------------------------------------------------------------------------------

    def record_inbox(self, envelope: dict[str, Any], at: float) -> bool:
        with self._tx() as conn:
            return self._inbox(conn, envelope, at)

    @staticmethod
    def _inbox(conn: sqlite3.Connection, envelope: dict[str, Any], at: float) -> bool:
        cur = conn.execute("INSERT OR IGNORE INTO inbox (id, received_at) VALUES (?, ?)",
                           (envelope["id"], at))
        if cur.rowcount == 0:
            return False
        conn.execute(_INSERT_EVENT, (envelope["id"], None, envelope["type"], "in", 1,
                                     _dumps(envelope)))
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
        with self._lock:
            rows = self._awaits(self._conn, event_type, key)
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

    def buffer_event(self, event: BufferedEvent) -> None:
        with self._tx() as conn:
            self._buffer(conn, event)

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
        with self._lock:
            rows = self._buffered(self._conn, "event_id, event_type, key, envelope, expires_at",
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
                           "ON e.id = o.event_id WHERE o.published_at IS NULL "
                           "ORDER BY o.seq LIMIT ?", (limit,))
        return [(r[0], json.loads(r[1])) for r in rows]

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        if not ids:
            return
        with self._tx() as conn:
            conn.executemany("UPDATE outbox SET published_at=? WHERE seq=?",
                             [(at, i) for i in ids])

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT envelope FROM events WHERE id=?", (event_id,))
        return json.loads(rows[0][0]) if rows else None

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT envelope FROM events WHERE run_id=? ORDER BY rowid",
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
        with self._lock:
            self._conn.close()


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return (run.id, run.saga, run.version, run.status, run.state, _dumps(run.input),
            run.correlation_id, run.causation_id, run.cause, run.created_at, run.updated_at,
            run.wake_at, run.error, run.cancel_reason, int(run.compensated_any), run.rev)


def _steps_from(text: str) -> dict[str, StepRecord]:
    return {name: StepRecord(name, *fields) for name, fields in json.loads(text).items()}


def _run_from(r: Sequence[Any]) -> RunRecord:
    return RunRecord(id=r[0], saga=r[1], version=r[2], status=r[3], state=r[4],
                     input=json.loads(r[5]), correlation_id=r[6], causation_id=r[7], cause=r[8],
                     created_at=r[9], updated_at=r[10], wake_at=r[11], error=r[12],
                     cancel_reason=r[13], compensated_any=bool(r[14]), rev=r[15])
