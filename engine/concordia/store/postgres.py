"""The PostgreSQL store: many workers on many machines share one journal.

Every SQL statement the PostgreSQL backend runs is in this module (the schema and its
migrations in :mod:`concordia.store.postgres_schema`, applied on open under an advisory
lock, so workers starting together migrate once). Connections come from a
``psycopg_pool.ConnectionPool``; each public write is one transaction, and
:meth:`PostgresStore.write_batch` runs several in one transaction (one WAL flush), each
in a savepoint of its own.

Concurrency is optimistic, as on SQLite: a commit updates the run's row only at the
revision its writer read (the row lock makes a second writer wait, then find the
revision moved). Workers claim due runs with ``FOR UPDATE SKIP LOCKED`` (:meth:`claim_due`),
setting their lease in the same statement, so two workers never pick the same run and
neither waits for the other. Whatever makes a run due for any worker (a run created
unclaimed, an event resuming one, a cancellation, a released lease) sends a ``NOTIFY``
in its commit; workers listen (:meth:`listen`) and also poll, so a lost notification
costs latency, never a run.

The async engine drives this store as it drives SQLite's (:mod:`concordia.store.aio`):
reads on a few threads, the writes of runs in flight grouped by one writer thread into
one transaction. It has no async path of its own on ``psycopg_pool.AsyncConnectionPool``:
that would write every query a second time, and writing on two or three connections at
once (so that one batch's wait for its commit overlaps the next batch) measured no faster
on the project's 2-core machine while costing memory per worker.

The URL is a libpq one (``postgresql://host/db``), with an optional ``schema=NAME``
query parameter: the store then lives in that schema (created if missing), which lets
many stores (tests, tenants) share one database without seeing each other's rows.

Errors of the server and the network are raised as :class:`~concordia.errors.StoreError`
naming the server; a write that failed may or may not have committed, which is safe:
the writer's next pass reads the run again and its revision tells.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from concordia.errors import StoreError, ValueRefusedError
from concordia.status import Kind, RunStatus, StepStatus
from concordia.store.base import ConflictError, Store
from concordia.store.changes import Commit, Delivered, Inbound
from concordia.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    HistoryEntry,
    RunRecord,
)
from concordia.store.rows import RUN_COLS as _RUN_COLS
from concordia.store.rows import dumps as _dumps
from concordia.store.rows import encode as _encode
from concordia.store.rows import history_rows as _history_rows
from concordia.store.rows import run_from as _run_from
from concordia.store.rows import step_from as _step_from
from concordia.store.rows import step_row as _step_row
from concordia.store.rows import steps_from as _steps_from

__all__ = ["CHANNEL", "SCHEMA_VERSION", "PostgresStore"]

MAX_BUFFERED_PER_TYPE = 10_000
CHANNEL = "concordia_due"  # NOTIFY channel; the payload is the store's schema
_RUN_ARGS = ", ".join(f"%({c})s" for c in _RUN_COLS.split(", "))
_STEPS_OF = ("SELECT {src}.id, t.name, t.record FROM {src}, unnest(%(names)s::text[], "
             "%(records)s::text[]) AS t(name, record)")
_LINES_OF = "SELECT {src}.id, %(lines)s FROM {src} WHERE %(lines)s::text IS NOT NULL"
_UPSERT = " ON CONFLICT (run_id, name) DO UPDATE SET record=excluded.record"
# A new run, its step records and history lines, in one statement (nothing if the id
# is taken).
_CREATE = (f"WITH r AS (INSERT INTO runs ({_RUN_COLS}) VALUES ({_RUN_ARGS}) "
           "ON CONFLICT (id) DO NOTHING RETURNING id), "
           f"s AS (INSERT INTO steps (run_id, name, record) {_STEPS_OF.format(src='r')}), "
           f"h AS (INSERT INTO history (run_id, entries) {_LINES_OF.format(src='r')}) "
           "SELECT id FROM r")
# A transition at the revision its writer read, with its steps and history, in one
# statement. A cancellation asked for meanwhile is kept (the first reason wins) and
# returned.
_COMMIT = ("WITH u AS (UPDATE runs SET status=%(status)s, wake_at=%(wake_at)s, "
           "state=%(state)s, cause=%(cause)s, updated_at=%(updated_at)s, error=%(error)s, "
           "cancel_reason=COALESCE(cancel_reason, %(cancel_reason)s), "
           "compensated_any=%(compensated_any)s, rev=%(rev)s, lease_owner=%(lease_owner)s, "
           "lease_expires=%(lease_expires)s WHERE id=%(id)s AND rev=%(expected)s "
           "RETURNING id, cancel_reason), "
           f"s AS (INSERT INTO steps (run_id, name, record) {_STEPS_OF.format(src='u')}"
           f"{_UPSERT}), "
           f"h AS (INSERT INTO history (run_id, entries) {_LINES_OF.format(src='u')}) "
           "SELECT cancel_reason FROM u")
_INSERT_EVENT = ("INSERT INTO events (id, source, run_id, type, direction, persistent, "
                 "envelope) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                 "ON CONFLICT (id, source) DO NOTHING RETURNING seq")
_LOAD = (f"SELECT {_RUN_COLS}, (SELECT json_object_agg(name, record::json)::text FROM steps "
         "WHERE steps.run_id = runs.id) FROM runs WHERE id=%s")
_ACTIVE_SQL = "('running', 'waiting', 'suspended')"
# A child's end wakes its parent: see PostgresStore._wake. A step record is a JSON array
# (store/rows.py): element 5 is its wake time, 0 its status, 6 its compensation's.
_WAKE_RUN = ("UPDATE runs SET status='running', wake_at=NULL, rev=rev + 1 WHERE id=%s AND "
             f"status IN {_ACTIVE_SQL} RETURNING num")
_WAKE_STEP = ("UPDATE steps SET record=jsonb_set(record::jsonb, '{5}', to_jsonb(%s::float8))"
              "::text WHERE run_id=%s AND name=%s AND (record::jsonb->>0 = 'awaiting' "
              "OR record::jsonb->>6 = 'awaiting')")
_LEASE_LIVE = "(lease_owner IS NOT NULL AND lease_expires > %(now)s)"
# Due for ``owner``: running runs in recorded order, then due timers, earliest first;
# never one leased live to another owner. Two statements, each walking an index (one
# ordering both kinds at once would sort every active run on every claim).
_NOT_HELD = ("(lease_owner IS NULL OR lease_owner=%(owner)s OR lease_expires <= %(now)s) "
             "AND id <> ALL(%(exclude)s::text[])")
_CLAIM = ("UPDATE runs SET lease_owner=%(owner)s, lease_expires=%(until)s WHERE num IN ("
          "SELECT num FROM runs WHERE {where} AND " + _NOT_HELD + " ORDER BY {order} "
          "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id, {order}")
_CLAIM_RUNNING = _CLAIM.format(where="status='running'", order="num")
_CLAIM_TIMERS = _CLAIM.format(where="status IN ('waiting', 'suspended') AND "
                                    "wake_at <= %(now)s", order="wake_at, num")
# Errors after which a transaction is worth trying again from the start.
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def split_url(url: str) -> tuple[str, str | None]:
    """The libpq connection string of ``url`` and the schema its ``schema=`` names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema or None


class PostgresStore:
    """A :class:`~concordia.store.base.Store` on a PostgreSQL database (see the docstring)."""

    does_io = True

    def __init__(self, url: str, *, readonly: bool = False, pool_size: int = 6,
                 connect_timeout: float = 10.0) -> None:
        self.url = url
        self.readonly = readonly
        conninfo, self.schema = split_url(url)
        self._local = threading.local()
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema is not None:
            kwargs["options"] = f"-csearch_path={self.schema}"
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
                                    open=False, timeout=connect_timeout,
                                    name="concordia")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self._pool.close()
            raise StoreError(f"cannot reach PostgreSQL store {self._where()}: {exc}") from None
        try:
            if readonly:
                self._check_schema()
            else:
                self._migrate()
            self._channel_payload = self.schema or self._current_schema()
        except BaseException:
            self._pool.close()
            raise

    def _where(self) -> str:
        parts = urlsplit(self._conninfo)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        return where + (f" (schema {self.schema})" if self.schema else "")

    # -- plumbing ----------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        text = str(exc).strip() or type(exc).__name__
        if isinstance(exc, psycopg.DataError):  # a value of the write's, not an outage
            return ValueRefusedError(f"PostgreSQL refused a value: {text}")
        return StoreError(f"PostgreSQL store {self._where()}: {text}")

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One write transaction (inside :meth:`write_batch`, part of the batch's)."""
        if self.readonly:
            raise StoreError(f"PostgreSQL store {self._where()} was opened read-only")
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:  # the batch's transaction (and the write's savepoint)
            yield batch.cur
            return
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._pool.check()  # drop the other connections a restart broke
            raise self._error(exc) from None

    def _query(self, query: str, args: Any = ()) -> list[Any]:
        """One read; tried again once on a fresh connection after a broken one."""
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    return conn.execute(query, args).fetchall()
            except psycopg.OperationalError as exc:
                self._pool.check()
                if attempt == 2:
                    raise self._error(exc) from None
            except psycopg.Error as exc:
                raise self._error(exc) from None
        raise AssertionError("unreachable")

    def _current_schema(self) -> str:
        return str(self._query("SELECT current_schema()")[0][0])

    def _migrate(self) -> None:
        with self._tx() as cur:
            # Workers starting together: one migrates, the others wait and find it done.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('concordia.migrate'))")
            if self.schema is not None:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.schema)))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"store {self._where()} has schema version {current}, newer "
                                 f"than this Concordia ({SCHEMA_VERSION}); upgrade Concordia")
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def _check_schema(self) -> None:
        try:
            current = self.schema_version()
        except StoreError:
            current = 0
        if current != SCHEMA_VERSION:
            raise StoreError(f"no Concordia store of schema version {SCHEMA_VERSION} at "
                             f"{self._where()} (found {current or 'none'}); open it once "
                             "read-write (a worker or `concordia run`) to create or migrate it")

    def schema_version(self) -> int:
        row = self._query("SELECT max(version) FROM schema_version")
        return int(row[0][0] or 0)

    def _notify(self, cur: psycopg.Cursor[Any]) -> None:
        """Tell listening workers that a run is due (delivered when the transaction
        commits; several in one transaction are folded into one)."""
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._channel_payload))

    def write_batch(self, fns: Sequence[Callable[[Store], Any]]
                    ) -> list[tuple[Any, BaseException | None]]:
        """Several writes in one transaction and one WAL flush.

        The writes this store offers refuse (ConflictError) before they write anything, so
        the batch needs no savepoint per write (each costs two round trips). Any other
        failure undoes the whole transaction, and the batch is then written again with a
        savepoint around each write, so that the one failing write does not take the
        others with it. A deadlock with another worker's batch is tried again.
        """
        if self.readonly:
            return [(None, StoreError(f"PostgreSQL store {self._where()} was opened "
                                      "read-only"))] * len(fns)
        savepoints = False
        for attempt in range(5):
            try:
                return self._batch(fns, savepoints)
            except _Undone:
                savepoints = True
            except _RETRYABLE as exc:
                if attempt == 4:
                    return [(None, self._error(exc))] * len(fns)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self._pool.check()
                return [(None, self._error(exc))] * len(fns)
        return [(None, StoreError(f"PostgreSQL store {self._where()}: a batch kept "
                                  "failing"))] * len(fns)

    def _batch(self, fns: Sequence[Callable[[Store], Any]], savepoints: bool
               ) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            self._local.batch = _Batch(conn, cur)
            try:
                for fn in fns:
                    try:
                        if savepoints:
                            with conn.transaction():  # a savepoint: undone alone on error
                                out.append((fn(self), None))
                        else:
                            out.append((fn(self), None))
                    except _RETRYABLE:
                        raise
                    except ConflictError as exc:  # refused before it wrote anything
                        out.append((None, exc))
                    except Exception as exc:
                        if not savepoints:
                            raise _Undone() from None
                        out.append((None, self._error(exc) if isinstance(exc, psycopg.Error)
                                    else exc))
            finally:
                self._local.batch = None
        return out

    # -- writes ------------------------------------------------------------------------------

    def create_run(self, commit: Commit) -> None:
        with self._tx() as cur:
            self._insert(cur, commit)

    def commit(self, commit: Commit) -> None:
        with self._tx() as cur:
            rev = self._update(cur, commit)
        commit.run.rev = rev

    def _insert(self, cur: psycopg.Cursor[Any], commit: Commit) -> None:
        run = commit.run
        run.rev = 1
        if cur.execute(_CREATE, {**_run_args(run), **_step_args(commit)}).fetchone() is None:
            raise ConflictError(run.id)
        self._apply(cur, commit)
        if run.status == RunStatus.RUNNING and run.lease_owner is None:
            self._notify(cur)

    def _update(self, cur: psycopg.Cursor[Any], commit: Commit) -> int:
        run = commit.run
        expected = run.rev if commit.expect_rev is None else commit.expect_rev
        if commit.awaits_add and self._unseen_buffered(cur, commit):
            raise ConflictError(run.id)
        # One statement: the run's row at the revision read, and only then its steps and
        # history lines (a refused commit writes nothing, so a batch needs no savepoint).
        row = cur.execute(_COMMIT, {**_run_args(run), **_step_args(commit), "rev": expected + 1,
                                    "expected": expected}).fetchone()
        if row is None:
            raise ConflictError(run.id)
        if row[0] is not None:
            run.cancel_reason = row[0]
        self._apply(cur, commit)
        if run.status == RunStatus.RUNNING and run.lease_owner is None:
            self._notify(cur)  # left runnable for anyone: a retry, a stopping worker
        return expected + 1

    def _apply(self, cur: psycopg.Cursor[Any], c: Commit) -> None:
        """Write what a commit adds besides the run's row: events, decisions, awaits."""
        rid = c.run.id
        for e in c.events:
            env = e["envelope"]
            row = cur.execute(_INSERT_EVENT, (env["id"], env["source"], rid, env["type"],
                                              "out", bool(e["persistent"]), _dumps(env))
                              ).fetchone()
            if e["persistent"] and row is not None:
                cur.execute("INSERT INTO outbox (event) VALUES (%s)", (row[0],))
        if c.decisions:
            cur.executemany("INSERT INTO decisions (decision_id, run_id, step, record) "
                            "VALUES (%s, %s, %s, %s)",
                            [(d["decision_id"], rid, d.get("step"), _dumps(d))
                             for d in c.decisions])
        if c.awaits_remove:
            cur.executemany("DELETE FROM awaits WHERE run_id=%s AND step=%s", c.awaits_remove)
        if c.awaits_add:
            cur.executemany(
                "INSERT INTO awaits (run_id, step, event_type, key, saga, version) VALUES "
                "(%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, step) DO UPDATE SET "
                "event_type=excluded.event_type, key=excluded.key, saga=excluded.saga, "
                "version=excluded.version",
                [(a.run_id, a.step, a.event_type, a.key, a.saga, a.version)
                 for a in c.awaits_add])
        if c.consume_buffered:
            cur.executemany("DELETE FROM buffered WHERE event_id=%s",
                            [(i,) for i in c.consume_buffered])
        if c.wake:
            self._wake(cur, c.wake, c.run.updated_at)

    def _wake(self, cur: psycopg.Cursor[Any], wake: Sequence[tuple[str, str]],
              at: float) -> None:
        """A child's end: each parent becomes runnable (a new revision, so a writer
        holding an older one reloads it) and its waiting step (forward or undoing) due."""
        for run_id, step in sorted(wake):
            row = cur.execute(_WAKE_RUN, (run_id,)).fetchone()
            if row is not None:
                cur.execute(_WAKE_STEP, (at, run_id, step))
                self._notify(cur)

    @staticmethod
    def _lock_types(cur: psycopg.Cursor[Any], types: Sequence[str]) -> None:
        """Serialise, per event type, registering awaits with buffering early events:
        each checks the other's table, which only works if they do not overlap (SQLite
        serialises every write; here two transactions could each miss the other)."""
        for event_type in sorted(set(types)):
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                        ("concordia.event:" + event_type,))

    def _unseen_buffered(self, cur: psycopg.Cursor[Any], c: Commit) -> bool:
        self._lock_types(cur, [a.event_type for a in c.awaits_add])
        seen = set(c.buffered_seen)
        for a in c.awaits_add:
            rows = self._buffered(cur, "event_id", a.event_type, a.key, c.run.updated_at)
            if any(r[0] not in seen for r in rows):
                return True
        return False

    def save_checkpoint(self, run_id: str, step: str, attempt: int, owner: str, data: Any,
                        at: float) -> bool:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT r.lease_owner, r.lease_expires, s.record FROM runs r JOIN steps s "
                "ON s.run_id = r.id AND s.name = %s WHERE r.id = %s FOR UPDATE OF r, s",
                (step, run_id)).fetchone()
            if row is None:
                return False
            lease_owner, lease_expires, text = row
            record = json.loads(text)
            if (record[0] != StepStatus.RUNNING or record[1] != attempt
                    or (lease_owner is not None and lease_owner != owner
                        and lease_expires is not None and lease_expires > at)):
                return False
            record[3] = data
            cur.execute("UPDATE steps SET record=%s WHERE run_id=%s AND name=%s",
                        (_encode(record), run_id, step))
            self._line(cur, HistoryEntry(run_id, at, Kind.STEP_CHECKPOINT, step, attempt,
                                         {"data": data}))
            return True

    @staticmethod
    def _line(cur: psycopg.Cursor[Any], entry: HistoryEntry) -> None:
        cur.execute("INSERT INTO history (run_id, entries) VALUES (%s, %s)",
                    (entry.run_id, _encode(_history_rows([entry]))))

    def request_cancel(self, run_id: str, reason: str, at: float) -> RunRecord | None:
        with self._tx() as cur:
            row = cur.execute(
                f"UPDATE runs SET cancel_reason=%(reason)s, "
                f"status=CASE WHEN {_LEASE_LIVE} THEN status ELSE 'running' END, "
                f"wake_at=CASE WHEN {_LEASE_LIVE} THEN wake_at ELSE NULL END, "
                f"rev=CASE WHEN {_LEASE_LIVE} THEN rev ELSE rev + 1 END "
                f"WHERE id=%(id)s AND cancel_reason IS NULL AND status IN {_ACTIVE_SQL} "
                f"RETURNING status", {"reason": reason, "now": at, "id": run_id}).fetchone()
            if row is not None:
                self._line(cur, HistoryEntry(run_id, at, Kind.RUN_CANCEL_REQUESTED, None,
                                             None, {"reason": reason}))
                self._notify(cur)
            current = cur.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=%s",
                                  (run_id,)).fetchone()
        return None if current is None else _run_from(current)

    def park(self, run_id: str, owner: str, error: str, at: float) -> None:
        with self._tx() as cur:
            row = cur.execute(
                f"UPDATE runs SET status='stuck', error=%(error)s, wake_at=NULL, "
                f"lease_owner=NULL, lease_expires=NULL, rev=rev + 1, updated_at=%(now)s "
                f"WHERE id=%(id)s AND status IN {_ACTIVE_SQL} AND NOT "
                f"({_LEASE_LIVE} AND lease_owner <> %(owner)s) RETURNING num",
                {"error": error, "now": at, "id": run_id, "owner": owner}).fetchone()
            if row is not None:
                self._line(cur, HistoryEntry(run_id, at, Kind.RUN_STUCK, None, None,
                                             {"error": error}))

    def renew_leases(self, owner: str, run_ids: Sequence[str], expires: float) -> list[str]:
        if not run_ids:
            return []
        # A row another transaction is writing is skipped, not waited for: that is a
        # commit of the run (ours, which renews the lease itself, or another worker's
        # taking it over), and waiting on it could deadlock with this worker's own batch.
        with self._tx() as cur:
            rows = cur.execute("UPDATE runs SET lease_expires=%s WHERE num IN (SELECT num "
                               "FROM runs WHERE lease_owner=%s AND id = ANY(%s) "
                               "FOR UPDATE SKIP LOCKED) RETURNING id",
                               (expires, owner, list(run_ids))).fetchall()
        return [r[0] for r in rows]

    def release_leases(self, owner: str, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with self._tx() as cur:
            # Rows locked in id order, as every multi-row write here, so that two of them
            # never wait for each other in a circle.
            rows = cur.execute("UPDATE runs SET lease_owner=NULL, lease_expires=NULL WHERE "
                               "num IN (SELECT num FROM runs WHERE lease_owner=%s AND "
                               "id = ANY(%s) ORDER BY id FOR UPDATE) RETURNING status",
                               (owner, list(run_ids))).fetchall()
            if any(r[0] == RunStatus.RUNNING for r in rows):
                self._notify(cur)

    def release_owner(self, owner: str) -> list[str]:
        with self._tx() as cur:
            rows = cur.execute("UPDATE runs SET lease_owner=NULL, lease_expires=NULL WHERE "
                               "num IN (SELECT num FROM runs WHERE lease_owner=%s AND status "
                               f"IN {_ACTIVE_SQL} ORDER BY id FOR UPDATE) RETURNING id",
                               (owner,)).fetchall()
            if rows:
                self._notify(cur)
        return [r[0] for r in rows]

    def claim_due(self, owner: str, now: float, limit: int, lease_until: float,
                  exclude: Sequence[str] = ()) -> list[str]:
        """Lease to ``owner`` up to ``limit`` runs with work now (as :meth:`due_runs`
        orders them), skipping rows another worker has locked and runs in ``exclude``.

        The lease is set without a new revision: the pass that follows takes it over in
        its first commit, which is checked against the revision its writer read.
        """
        args = {"owner": owner, "until": lease_until, "now": now, "limit": limit,
                "exclude": list(exclude)}
        with self._tx() as cur:
            running = cur.execute(_CLAIM_RUNNING, args).fetchall()
            running.sort(key=lambda r: r[1])
            timers: list[Any] = []
            if len(running) < limit:
                args["limit"] = limit - len(running)
                timers = cur.execute(_CLAIM_TIMERS, args).fetchall()
                timers.sort(key=lambda r: (r[1], r[2]))
        return [r[0] for r in running + timers]

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs WHERE id=%s", (run_id,))
        return _run_from(rows[0]) if rows else None

    def load(self, run_id: str) -> tuple[RunRecord, dict[str, Any]] | None:
        rows = self._query(_LOAD, (run_id,))
        if not rows:
            return None
        return _run_from(rows[0]), _steps_from(rows[0][-1])

    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord]:
        rows = self._query(
            f"SELECT {_RUN_COLS} FROM runs WHERE (%(saga)s::text IS NULL OR saga=%(saga)s) "
            "AND (%(status)s::text IS NULL OR status=%(status)s) AND "
            "(%(corr)s::text IS NULL OR correlation_id=%(corr)s) AND (%(before)s::text IS NULL "
            "OR num < (SELECT num FROM runs WHERE id=%(before)s)) ORDER BY num DESC "
            "LIMIT %(limit)s", {"saga": saga, "status": status, "corr": correlation_id,
                                "before": before, "limit": limit})
        return [_run_from(r) for r in rows]

    def run_counts(self) -> list[tuple[str, str, int]]:
        rows = self._query("SELECT saga, status, COUNT(*) FROM runs GROUP BY saga, status "
                           "ORDER BY saga, status")
        return [(r[0], r[1], int(r[2])) for r in rows]

    def outbox_backlog(self) -> tuple[int, str | None]:
        rows = self._query(
            "SELECT COUNT(*), (SELECT e.envelope::json->>'time' FROM outbox o JOIN events e "
            "ON e.seq = o.event WHERE o.published_at IS NULL ORDER BY o.seq LIMIT 1) "
            "FROM outbox WHERE published_at IS NULL")
        return int(rows[0][0]), rows[0][1]

    def get_steps(self, run_id: str) -> dict[str, Any]:
        rows = self._query("SELECT name, record FROM steps WHERE run_id=%s", (run_id,))
        return {name: _step_from(name, json.loads(text)) for name, text in rows}

    def history(self, run_id: str) -> list[HistoryEntry]:
        rows = self._query("SELECT entries FROM history WHERE run_id=%s ORDER BY seq",
                           (run_id,))
        return [HistoryEntry(run_id, *entry) for r in rows for entry in json.loads(r[0])]

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs WHERE (%(status)s::text IS NULL OR "
                           "status=%(status)s) AND (%(saga)s::text IS NULL OR saga=%(saga)s) "
                           "ORDER BY num LIMIT %(limit)s",
                           {"status": status, "saga": saga, "limit": limit})
        return [_run_from(r) for r in rows]

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the unique index of ids, compared byte-wise (LIKE would need escaping).
        rows = self._query('SELECT id FROM runs WHERE id COLLATE "C" >= %s AND '
                           'id COLLATE "C" < %s ORDER BY id COLLATE "C" LIMIT %s',
                           (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def due_runs(self, now: float, limit: int, owner: str | None = None) -> list[str]:
        rows = self._query(
            # A due timer may be leased too here: another worker's claim_due took it.
            f"SELECT id FROM runs WHERE status IN {_ACTIVE_SQL} AND (status='running' OR "
            "wake_at <= %(now)s) AND (%(owner)s::text IS NULL OR "
            "lease_owner IS NULL OR lease_owner=%(owner)s OR lease_expires <= %(now)s) "
            "ORDER BY status <> 'running', wake_at NULLS FIRST, num LIMIT %(limit)s",
            {"now": now, "owner": owner, "limit": limit})
        return [r[0] for r in rows]

    def lease_holders(self, now: float) -> dict[str, int]:
        rows = self._query(f"SELECT lease_owner, count(*) FROM runs WHERE status IN "
                           f"{_ACTIVE_SQL} AND lease_owner IS NOT NULL AND lease_expires > %s "
                           "GROUP BY lease_owner", (now,))
        return {r[0]: int(r[1]) for r in rows}

    def next_wake_at(self) -> float | None:
        # Timers by their index; leases over the running runs (no index covers the lease,
        # which every commit renews: see postgres_schema).
        rows = self._query(
            "SELECT least((SELECT min(wake_at) FROM runs WHERE status IN ('waiting', "
            "'suspended')), (SELECT min(lease_expires) FROM runs WHERE status='running'))")
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    def listen(self, on_due: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_due()`` (from a thread of its own) whenever a commit makes a run due;
        returns a function that stops listening. A broken connection is made again."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self._conninfo, **self._kwargs) as conn:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                        on_due()  # anything committed while not listening is due too
                        while not stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                if note.payload == self._channel_payload:
                                    on_due()
                except psycopg.Error:
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="concordia-listen", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=5.0)

        return close

    # -- events ------------------------------------------------------------------------------

    def apply_delivery(self, items: Sequence[Inbound]) -> list[str]:
        statuses: list[str] = []
        revs: list[list[int]] = []
        with self._tx() as cur:
            conn = cur.connection
            for item in items:
                try:
                    with conn.transaction():
                        status, new_revs = self._deliver(cur, item)
                        if status != Delivered.APPLIED:
                            raise _Undo(status)
                except _Undo as undo:
                    status, new_revs = undo.status, []
                statuses.append(status)
                revs.append(new_revs)
            if any(s == Delivered.APPLIED and (i.resumes or i.creates)
                   for s, i in zip(statuses, items, strict=True)):
                self._notify(cur)
        for item, status, new_revs in zip(items, statuses, revs, strict=True):
            if status == Delivered.APPLIED:
                for c, rev in zip(item.resumes, new_revs, strict=True):
                    c.run.rev = rev
        return statuses

    def _deliver(self, cur: psycopg.Cursor[Any], item: Inbound) -> tuple[str, list[int]]:
        env = item.envelope
        row = cur.execute("INSERT INTO inbox (source, id, received_at) VALUES (%s, %s, %s) "
                          "ON CONFLICT DO NOTHING RETURNING id",
                          (env["source"], env["id"], item.received_at)).fetchone()
        if row is None:
            return Delivered.DUPLICATE, []
        cur.execute(_INSERT_EVENT, (env["id"], env["source"], None, env["type"], "in", True,
                                    _dumps(env)))
        revs: list[int] = []
        try:
            for c in item.resumes:
                revs.append(self._update(cur, c))
            for c in item.creates:
                self._insert(cur, c)
        except ConflictError:
            return Delivered.CONFLICT, []
        if item.buffer:
            self._lock_types(cur, [b.event_type for b in item.buffer])
        seen = set(item.awaits_seen)
        for event in item.buffer:
            if any((r[0], r[1]) not in seen for r in self._awaits(cur, event.event_type,
                                                                  event.key)):
                return Delivered.CONFLICT, []
            self._buffer(cur, event)
        return Delivered.APPLIED, revs

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        cols = "run_id, step, event_type, key, saga, version"
        if key is None:
            rows = self._query(f"SELECT {cols} FROM awaits WHERE event_type=%s AND "
                               "key IS NULL", (event_type,))
        else:
            rows = self._query(f"SELECT {cols} FROM awaits WHERE event_type=%s AND "
                               "(key=%s OR key IS NULL)", (event_type, key))
        return sorted(AwaitRecord(*r) for r in rows)  # type: ignore[type-var]

    @staticmethod
    def _awaits(cur: psycopg.Cursor[Any], event_type: str, key: str | None) -> list[Any]:
        if key is None:
            return cur.execute("SELECT run_id, step FROM awaits WHERE event_type=%s AND "
                               "key IS NULL", (event_type,)).fetchall()
        return cur.execute("SELECT run_id, step FROM awaits WHERE event_type=%s AND "
                           "(key=%s OR key IS NULL)", (event_type, key)).fetchall()

    @staticmethod
    def _buffer(cur: psycopg.Cursor[Any], event: BufferedEvent) -> None:
        cur.execute("DELETE FROM buffered WHERE event_type=%s AND expires_at <= %s",
                    (event.event_type, event.expires_at - 2 * 86400.0 * 365))
        count = cur.execute("SELECT count(*) FROM buffered WHERE event_type=%s",
                            (event.event_type,)).fetchone()
        if count is not None and count[0] >= MAX_BUFFERED_PER_TYPE:
            cur.execute("DELETE FROM buffered WHERE event_id = (SELECT event_id FROM buffered "
                        "WHERE event_type=%s ORDER BY expires_at LIMIT 1)", (event.event_type,))
        cur.execute("INSERT INTO buffered (event_id, event_type, key, envelope, expires_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE SET "
                    "event_type=excluded.event_type, key=excluded.key, "
                    "envelope=excluded.envelope, expires_at=excluded.expires_at",
                    (event.event_id, event.event_type, event.key, _dumps(event.envelope),
                     event.expires_at))

    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            try:
                rows = self._buffered(cur, "event_id, event_type, key, envelope, expires_at",
                                      event_type, key, now)
            except psycopg.Error as exc:
                raise self._error(exc) from None
        return [BufferedEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    @staticmethod
    def _buffered(cur: psycopg.Cursor[Any], cols: str, event_type: str, key: str | None,
                  now: float) -> list[Any]:
        query = sql.SQL("SELECT {} FROM buffered WHERE event_type=%s AND expires_at > %s "
                        "{} ORDER BY event_id COLLATE \"C\"").format(
            sql.SQL(cols), sql.SQL("") if key is None else
            sql.SQL("AND (key=%s OR key IS NULL)"))
        args: tuple[Any, ...] = (event_type, now) if key is None else (event_type, now, key)
        return cur.execute(query, args).fetchall()

    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._query("SELECT o.seq, e.envelope FROM outbox o JOIN events e "
                           "ON e.seq = o.event WHERE o.published_at IS NULL "
                           "ORDER BY o.seq LIMIT %s", (limit,))
        return [(r[0], json.loads(r[1])) for r in rows]

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        if not ids:
            return
        with self._tx() as cur:
            cur.execute("UPDATE outbox SET published_at=%s WHERE seq = ANY(%s)",
                        (at, list(ids)))

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT envelope FROM events WHERE id=%s ORDER BY seq LIMIT 1",
                           (event_id,))
        return json.loads(rows[0][0]) if rows else None

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT envelope FROM events WHERE run_id=%s ORDER BY seq",
                           (run_id,))
        return [json.loads(r[0]) for r in rows]

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT record FROM decisions WHERE run_id=%s ORDER BY seq",
                           (run_id,))
        return [json.loads(r[0]) for r in rows]

    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]:
        if not self.readonly and definitions:
            with self._tx() as cur:
                cur.executemany("INSERT INTO definitions (saga, version, fingerprint, "
                                "document) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                [(n, v, f, _dumps(d)) for n, v, f, d in definitions])
        rows = self._query("SELECT saga, version, fingerprint FROM definitions")
        return {(r[0], r[1]): r[2] for r in rows}

    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None:
        rows = self._query("SELECT document FROM definitions WHERE saga=%s AND version=%s",
                           (saga, version))
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        self._pool.close()


class _Undo(Exception):
    """Roll one delivery's savepoint back and report ``status``."""

    def __init__(self, status: str) -> None:
        self.status = status


def _run_args(run: RunRecord) -> dict[str, Any]:
    return {"id": run.id, "saga": run.saga, "version": run.version,
            "status": run.status.value, "state": run.state, "input": _dumps(run.input),
            "correlation_id": run.correlation_id, "causation_id": run.causation_id,
            "cause": run.cause, "created_at": run.created_at, "updated_at": run.updated_at,
            "wake_at": run.wake_at, "error": run.error, "cancel_reason": run.cancel_reason,
            "compensated_any": bool(run.compensated_any), "rev": run.rev,
            "lease_owner": run.lease_owner, "lease_expires": run.lease_expires,
            "parent_run_id": run.parent_run_id, "parent_step": run.parent_step}


def _step_args(commit: Commit) -> dict[str, Any]:
    return {"names": [s.name for s in commit.steps],
            "records": [_encode(_step_row(s)) for s in commit.steps],
            "lines": _encode(_history_rows(commit.history)) if commit.history else None}


class _Batch:
    """The transaction :meth:`PostgresStore.write_batch` holds for this thread."""

    __slots__ = ("conn", "cur")

    def __init__(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> None:
        self.conn = conn
        self.cur = cur


class _Undone(Exception):
    """A write in a batch failed after writing: the batch is undone and written again."""
