"""The PostgreSQL store's own parts: schema and migrations agree, claiming is race-free
(``FOR UPDATE SKIP LOCKED``), commits that make a run due notify listening workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from concordia.errors import StoreError
from concordia.status import RunStatus
from concordia.store import open_store
from concordia.store.changes import Commit
from concordia.store.postgres import PostgresStore
from concordia.store.postgres_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from concordia.store.records import RunRecord
from tests.pg import PG_BASE, drop_schema, new_schema, schema_url

pytestmark = pytest.mark.postgres
T = 1_800_000_000.0


@pytest.fixture
def schema() -> Iterator[str]:
    name = new_schema()
    yield name
    drop_schema(name)


@pytest.fixture
def store(schema: str) -> Iterator[PostgresStore]:
    opened = open_store(schema_url(schema))
    assert isinstance(opened, PostgresStore)
    yield opened
    opened.close()


def layout(schema: str) -> dict[str, list[tuple[str, ...]]]:
    """Every column, index and constraint of ``schema``, as the catalog describes them."""
    with psycopg.connect(PG_BASE) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, "
            "coalesce(column_default, ''), is_identity FROM information_schema.columns "
            "WHERE table_schema=%s ORDER BY 1, 2", (schema,)).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, replace(indexdef, %s, 'S') FROM pg_indexes "
            "WHERE schemaname=%s ORDER BY 1, 2", (f'{schema}.', schema)).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname=%s ORDER BY 1, 2, 3", (schema,)).fetchall()
        storage = conn.execute(
            "SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname=%s ORDER BY 1",
            (schema,)).fetchall()
    return {"columns": columns, "indexes": indexes, "storage": storage,
            "constraints": [(t.split(".")[-1], k, d) for t, k, d in constraints]}


def test_a_database_built_by_the_migrations_equals_one_built_from_the_schema(
        store: PostgresStore, schema: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
    other = new_schema()
    try:
        with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
            conn.execute(f'CREATE SCHEMA "{other}"')
            conn.execute(f'SET LOCAL search_path = "{other}"')
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for statement in SCHEMA:
                conn.execute(statement)  # type: ignore[call-overload]
        migrated, built = layout(schema), layout(other)
        assert migrated["columns"]
        assert migrated["indexes"]
        assert {c[0] for c in migrated["columns"]} >= {
            "runs", "steps", "history", "events", "outbox", "inbox", "awaits", "buffered",
            "decisions", "definitions", "schema_version"}
        assert migrated == built
    finally:
        drop_schema(other)


def test_reopening_migrates_nothing_and_a_newer_schema_is_refused(
        store: PostgresStore, schema: str) -> None:
    before = layout(schema)
    open_store(schema_url(schema)).close()
    assert layout(schema) == before
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".schema_version VALUES (%s)', (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than"):
        open_store(schema_url(schema))


def test_read_only_open_never_creates_a_store(schema: str) -> None:
    with pytest.raises(StoreError, match="read-write"):
        open_store(schema_url(schema), readonly=True)
    with psycopg.connect(PG_BASE) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname=%s",
                            (schema,)).fetchone() is None


def test_an_unreachable_server_is_a_store_error_naming_it() -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
        PostgresStore("postgresql://127.0.0.1:1/test", connect_timeout=1.0)


def run(run_id: str, status: RunStatus = RunStatus.RUNNING, wake_at: float | None = None,
        owner: str | None = None, expires: float | None = None) -> Commit:
    return Commit(run=RunRecord(
        id=run_id, saga="order", version=1, status=status, state="run_0", input={},
        correlation_id="c", causation_id=None, cause=run_id, created_at=T, updated_at=T,
        wake_at=wake_at, lease_owner=owner, lease_expires=expires))


def test_claims_by_many_workers_at_once_are_disjoint_and_cover_every_due_run(
        store: PostgresStore, schema: str) -> None:
    for i in range(200):
        store.create_run(run(f"r{i:03d}"))
    store.create_run(run("held", owner="other", expires=T + 60))
    store.create_run(run("timer", RunStatus.WAITING, wake_at=T - 1))
    store.create_run(run("later", RunStatus.WAITING, wake_at=T + 60))
    claimed: dict[str, list[str]] = {}
    stores = [open_store(schema_url(schema)) for _ in range(4)]
    barrier = threading.Barrier(4)

    def claim(name: str, s: PostgresStore) -> None:
        barrier.wait()
        mine = claimed.setdefault(name, [])
        while batch := s.claim_due(name, T, 7, T + 30, mine):
            mine.extend(batch)

    threads = [threading.Thread(target=claim, args=(f"w{i}", s))
               for i, s in enumerate(stores)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    every = [r for mine in claimed.values() for r in mine]
    assert len(every) == len(set(every))  # no run claimed twice
    assert set(every) == {f"r{i:03d}" for i in range(200)} | {"timer"}
    for name, mine in claimed.items():
        for run_id in mine[:5]:
            got = store.get_run(run_id)
            assert got is not None
            assert (got.lease_owner, got.lease_expires, got.rev) == (name, T + 30, 1)


def test_a_claim_skips_rows_another_transaction_has_locked(store: PostgresStore,
                                                           schema: str) -> None:
    store.create_run(run("locked"))
    store.create_run(run("free"))
    with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
        conn.execute(f'SELECT 1 FROM "{schema}".runs WHERE id=%s FOR UPDATE', ("locked",))
        started = time.monotonic()
        assert store.claim_due("w", T, 10, T + 30) == ["free"]
        assert time.monotonic() - started < 2.0  # skipped, not waited for
    assert store.claim_due("w2", T, 10, T + 30) == ["locked"]  # "free" is w's now


def test_commits_that_make_a_run_due_wake_listeners_of_this_store_only(
        store: PostgresStore, schema: str) -> None:
    other_schema = new_schema()
    other = open_store(schema_url(other_schema))
    woken = threading.Event()
    calls: list[float] = []

    def on_due() -> None:
        calls.append(time.monotonic())
        woken.set()

    stop = store.listen(on_due)
    try:
        assert woken.wait(10)  # the first call comes when listening starts
        woken.clear()
        other.create_run(run("elsewhere"))
        assert not woken.wait(0.5)
        store.create_run(run("claimed-by-creator", owner="me", expires=T + 30))
        assert not woken.wait(0.5)  # its creator runs it: nobody else needs waking
        store.create_run(run("free-for-all"))
        assert woken.wait(5)
    finally:
        stop()
        other.close()
        drop_schema(other_schema)


def test_a_batch_is_one_transaction_where_a_refused_or_failing_write_undoes_only_itself(
        store: PostgresStore) -> None:
    from concordia.store.base import ConflictError

    def half_then_fail(s: object) -> None:
        assert isinstance(s, PostgresStore)
        s.create_run(run("half"))  # written, then undone with its write alone
        raise ValueError("handler-side failure after a write")

    stale = run("r1")
    stale.expect_rev = 7  # not the revision stored: refused
    outcomes = store.write_batch([
        lambda s: s.create_run(run("r1")),
        lambda s: s.commit(stale),
        lambda s: s.create_run(run("r1")),  # the id is taken
        half_then_fail,
        lambda s: s.create_run(run("r2")),
    ])
    errors = [type(e).__name__ if e else None for _, e in outcomes]
    assert errors == [None, "ConflictError", "ConflictError", "ValueError", None]
    assert isinstance(outcomes[1][1], ConflictError)
    assert [r.id for r in store.list_runs()] == ["r1", "r2"]
    assert store.get_run("half") is None
    loaded = store.load("r1")
    assert loaded is not None
    assert loaded[0].rev == 1
