"""The PostgreSQL dialect: a ``psycopg_pool`` of connections, row locks, ``NOTIFY``.

A commit is one statement: data-modifying CTEs update the run's row at the revision its
writer read and, only then (they read the ``UPDATE``'s ``RETURNING``), upsert its step and
item records (typed arrays, ``unnest``-ed into rows) and append its history lines; a
refused commit writes nothing, so a batch needs no savepoint per write. Whatever makes a
run due for any worker sends one ``NOTIFY`` in the transaction that does it. Migrations
run under an advisory lock, so workers starting together migrate once; ``schema=NAME`` in
the URL puts the store in that schema (created if missing).

Errors of the server and the network are raised as :class:`~concordia.errors.StoreError`
naming the server (a value the server refuses as :class:`~concordia.errors.
ValueRefusedError`); a write that failed may or may not have committed, which is safe:
the writer's next pass reads the run again and its revision tells.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from concordia.errors import StoreError, ValueRefusedError
from concordia.store.changes import Commit
from concordia.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from concordia.store.sql import rows
from concordia.store.sql.dialect import RetryError, Row, Tx, expected, migrate, readable, upsert

T = TypeVar("T")
CHANNEL = "concordia_due"  # NOTIFY channel; the payload is the store's schema
_RETRY = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class BrokenError(StoreError):
    """The connection broke (a server restart, the network): a read is worth trying again
    on another one."""


@lru_cache(maxsize=1024)
def _native(text: str) -> str:
    """The journal's ``?`` placeholders as psycopg's (its SQL has no other ``?`` or ``%``)."""
    return text.replace("?", "%s")


def split_url(url: str) -> tuple[str, str | None]:
    """The libpq connection string of ``url`` and the schema its ``schema=`` names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    # quote, not quote_plus: libpq reads "+" as itself, not as a space
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), schema or None


def _kind(column: str) -> str:
    return ("int" if column in rows.INTEGER_COLUMNS else
            "float8" if column in rows.REAL_COLUMNS else "text")


def _records(table: str, source: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """A CTE upserting the records passed as one JSON array of arrays (each a record's
    columns in order), keyed by the run's key that ``source`` returns.

    One JSON text costs both sides far less than an array per column: measured here, for a
    commit's two step records, psycopg's array dumping took 75 µs of the client's CPU and
    the server's parsing of 15 arrays 40 µs, against 14 µs and 10 µs for the JSON text
    read by position (``->>`` on ``json``: each element is a short array)."""
    fields = ", ".join(f"(x->>{i})::{_kind(c)}" for i, c in enumerate(columns))
    return (f"{table[0]} AS (INSERT INTO {table} (run, {', '.join(columns)}) SELECT "
            f"{source}.num, {fields} FROM {source}, json_array_elements(?::json) AS x "
            f"{upsert(key, columns)})")


@lru_cache(maxsize=32)
def _core(head: str, source: str, steps: bool, items: bool, history: bool, tail: str) -> str:
    """A commit's statement: ``head`` (the CTE writing the run's row), then its records
    and history lines (those it has), then ``tail``."""
    parts = [head]
    if steps:
        parts.append(_records("steps", source, rows.STEP_COLUMNS, rows.STEP_KEY))
    if items:
        parts.append(_records("items", source, rows.ITEM_COLUMNS, rows.ITEM_KEY))
    if history:
        parts.append(f"h AS (INSERT INTO history (run, entries) SELECT num, ? FROM {source})")
    return "WITH " + ", ".join(parts) + " " + tail


_CREATE = (f"r AS (INSERT INTO runs ({rows.RUN_COLS}) VALUES "
           f"({', '.join('?' * len(rows.RUN_COLUMNS))}) ON CONFLICT (id) DO NOTHING "
           "RETURNING num)")
_UPDATE = ("u AS (UPDATE runs SET status = ?, wake_at = ?, "
           + ", ".join(f"{c} = ?" for c in rows.RUN_CHANGES)
           + ", cancel_reason = COALESCE(cancel_reason, ?), rev = ? WHERE id = ? AND rev = ? "
             "RETURNING num, cancel_reason)")


def _core_args(c: Commit) -> list[Any]:
    """The parameters of a commit's records and history, in statement order."""
    args: list[Any] = []
    if c.steps:
        args.append(rows.encode(list(map(rows.step_values, c.steps))))
    if c.items:
        args.append(rows.encode(list(map(rows.item_values, c.items))))
    if c.history:
        args.append(rows.history_text(c.history))
    return args


def _update(c: Commit) -> tuple[str, list[Any]]:
    """A commit's statement and its parameters."""
    run, rev = c.run, expected(c)
    text = _core(_UPDATE, "u", bool(c.steps), bool(c.items), bool(c.history),
                 "SELECT num, cancel_reason FROM u")
    return text, [run.status.value, run.wake_at, *rows.change_values(run), run.cancel_reason,
                  rev + 1, run.id, rev, *_core_args(c)]


class PgTx:
    """Statements on one psycopg cursor, with the journal's placeholders translated
    (``alone``: the one statement of a write that is atomic alone, see Dialect.alone)."""

    __slots__ = ("cur", "dialect", "left", "notify")

    def __init__(self, cur: psycopg.Cursor[Any], dialect: PostgresDialect,
                 alone: bool = False) -> None:
        self.cur = cur
        self.dialect = dialect
        self.notify = False
        self.left = 1 if alone else -1  # statements it may still run (-1: any number)

    def _execute(self, text: str, args: Sequence[Any]) -> psycopg.Cursor[Any]:
        if self.left == 0:  # a second statement would not be atomic with the first
            raise AssertionError("a write made alone ran a second statement")
        self.left -= 1
        try:
            return self.cur.execute(_native(text), args or None)
        except psycopg.Error as exc:
            raise self.dialect.error(exc) from None

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._execute(sql, args).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._execute(sql, args).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._execute(sql, args).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.cur.executemany(_native(sql), rows)
        except psycopg.Error as exc:
            raise self.dialect.error(exc) from None

    def each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Row | None]:
        """The statements pipelined: sent together, their results read after."""
        if len(statements) == 1:
            return [self.one(*statements[0])]
        conn = self.cur.connection
        cursors = [conn.cursor() for _ in statements]
        try:
            with conn.pipeline():
                for cur, (text, args) in zip(cursors, statements, strict=True):
                    cur.execute(_native(text), args)
            return [cur.fetchone() for cur in cursors]
        except psycopg.Error as exc:
            raise self.dialect.error(exc) from None
        finally:
            for cur in cursors:
                cur.close()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        try:
            with self.cur.connection.transaction():
                yield
        except psycopg.Error as exc:
            raise self.dialect.error(exc) from None

    def due(self) -> None:
        self.notify = True

    def serialise(self, event_types: Sequence[str]) -> None:
        # Transactions lock the types in one order, so two never wait for each other.
        for event_type in sorted(set(event_types)):
            self.one("SELECT pg_advisory_xact_lock(hashtext(?))",
                     ("concordia.event:" + event_type,))


class PostgresDialect:
    """The journal on a PostgreSQL database (see the module docstring)."""

    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    binary = ' COLLATE "C"'

    def __init__(self, url: str, *, readonly: bool, pool_size: int,
                 connect_timeout: float) -> None:
        self.conninfo, self.schema = split_url(url)
        parts = urlsplit(self.conninfo)
        self.where = (f"PostgreSQL store {parts.hostname or 'localhost'}:{parts.port or 5432}"
                      f"{parts.path}" + (f" (schema {self.schema})" if self.schema else ""))
        self.kwargs: dict[str, Any] = {"autocommit": True}
        if self.schema is not None:
            self.kwargs["options"] = f"-csearch_path={self.schema}"
        self.pool = ConnectionPool(self.conninfo, min_size=1, max_size=pool_size,
                                   kwargs=self.kwargs, open=False, timeout=connect_timeout,
                                   name="concordia")
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self.pool.close()
            raise StoreError(f"cannot reach {self.where}: {exc}") from None
        try:
            if readonly:
                self._check_schema()
            else:
                self._migrate()
            self.payload = self.schema or str(self.read(
                lambda tx: tx.all("SELECT current_schema()"))[0][0])
        except BaseException:
            self.pool.close()
            raise

    def error(self, exc: psycopg.Error) -> StoreError:
        text = str(exc).strip() or type(exc).__name__
        if isinstance(exc, _RETRY):
            return RetryError(f"{self.where}: {text}")
        if isinstance(exc, psycopg.DataError):  # a value of the write's, not an outage
            return ValueRefusedError(f"PostgreSQL refused a value: {text}")
        if isinstance(exc, psycopg.OperationalError):
            self.pool.check()  # drop the other connections a restart broke
            return BrokenError(f"{self.where}: {text}")
        return StoreError(f"{self.where}: {text}")

    def _migrate(self) -> None:
        with self.transaction() as tx:
            # Workers starting together: one migrates, the others wait and find it done.
            tx.one("SELECT pg_advisory_xact_lock(hashtext('concordia.migrate'))")
            if self.schema is not None:
                tx.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.schema)).as_string(None))
            tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            migrate(tx, MIGRATIONS, self.schema_version(tx), self.where,
                    lambda tx, version: tx.run(
                        "INSERT INTO schema_version (version) VALUES (?)", (version,)))

    def _check_schema(self) -> None:
        try:
            current = self.read(self.schema_version)
        except StoreError:  # no table of versions: no store
            current = 0
        readable(current, SCHEMA_VERSION, self.where)

    @staticmethod
    def schema_version(tx: Tx) -> int:
        row = tx.one("SELECT max(version) FROM schema_version")
        return int(row[0] or 0) if row is not None else 0

    def among(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def listed(self, values: Sequence[Any]) -> Any:
        return list(values)

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                tx = PgTx(cur, self)
                yield tx
                if tx.notify:  # delivered when the transaction commits
                    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.payload))
        except psycopg.Error as exc:
            raise self.error(exc) from None

    @contextmanager
    def alone(self) -> Iterator[Tx]:
        """Its one statement in autocommit: one round trip, no BEGIN or COMMIT. A run it
        leaves due is told of after (a notification lost to a crash between the two costs
        latency, never a run)."""
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                tx = PgTx(cur, self, alone=True)
                yield tx
                if tx.notify:
                    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.payload))
        except psycopg.Error as exc:
            raise self.error(exc) from None

    def read(self, fn: Callable[[Tx], T]) -> T:
        """``fn`` on a pooled connection; tried again once on a fresh connection after a
        broken one."""
        for attempt in (1, 2):
            try:
                with self.pool.connection() as conn, conn.cursor() as cur:
                    return fn(PgTx(cur, self))
            except psycopg.Error as exc:  # taking or giving back the connection
                error = self.error(exc)
                if attempt == 2 or not isinstance(error, BrokenError):
                    raise error from None
            except BrokenError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the core of commits -----------------------------------------------------------------

    def insert_run(self, tx: Tx, commit: Commit) -> int | None:
        text = _core(_CREATE, "r", bool(commit.steps), bool(commit.items),
                     bool(commit.history), "SELECT num FROM r")
        row = tx.one(text, [*rows.run_values(commit.run), *_core_args(commit)])
        return None if row is None else int(row[0])

    def update_runs(self, tx: Tx, commits: Sequence[Commit]
                    ) -> list[tuple[int, str | None] | None]:
        """One statement a commit, all sent together."""
        found = tx.each([_update(c) for c in commits])
        return [None if row is None else (int(row[0]), row[1]) for row in found]

    def append_history(self, tx: Tx, num: int, text: str, ended: bool) -> None:
        tx.run("INSERT INTO history (run, entries) VALUES (?, ?)", (num, text))

    def read_history(self, run_id: str) -> list[str]:
        found = self.read(lambda tx: tx.all(
            "SELECT entries FROM history WHERE run = (SELECT num FROM runs WHERE id = ?) "
            "ORDER BY seq", (run_id,)))
        return [r[0] for r in found]

    # -- listening ---------------------------------------------------------------------------

    def listen(self, on_due: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_due()`` (from a thread of its own) whenever a commit makes a run due;
        returns a function that stops listening. A broken connection is made again."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self.conninfo, **self.kwargs) as conn:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                        on_due()  # anything committed while not listening is due too
                        while not stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                if note.payload == self.payload:
                                    on_due()
                except psycopg.Error:
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="concordia-listen", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=5.0)

        return close

    def close(self) -> None:
        self.pool.close()

