"""The PostgreSQL store's own parts: schema and migrations agree, claims pass over locked
rows (``FOR UPDATE SKIP LOCKED``), commits that make a run due notify listening workers,
and a step's commit is one statement that updates rows in place (HOT)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from concordia.errors import StoreError
from concordia.runtime import transitions
from concordia.status import RunStatus, StepStatus
from concordia.store import open_store
from concordia.store.changes import Commit
from concordia.store.postgres import PostgresStore
from concordia.store.postgres_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from tests.pg import PG_BASE, drop_schema, new_schema, schema_url
from tests.store.builders import T, advance, create, line, run, step

pytestmark = pytest.mark.postgres


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


def layout(schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every column, index, constraint and storage option of ``schema``, as the catalog
    describes them."""
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


def build_schema(schema: str) -> None:
    """A database from :data:`SCHEMA`, the schema as it stands."""
    with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET LOCAL search_path = "{schema}"')
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in SCHEMA:
            assert isinstance(statement, str)
            conn.execute(statement.encode())


def test_a_database_built_by_the_migrations_equals_one_built_from_the_schema(
        store: PostgresStore, schema: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0] == 6
    other = new_schema()
    try:
        build_schema(other)
        migrated, built = layout(schema), layout(other)
        assert {c[0] for c in migrated["columns"]} == {
            "runs", "steps", "items", "history", "events", "outbox", "inbox", "awaits",
            "buffered", "decisions", "definitions", "schema_version"}
        assert migrated == built
    finally:
        drop_schema(other)


def test_no_index_covers_a_column_a_commit_changes_nor_names_a_status(
        store: PostgresStore, schema: str) -> None:
    indexes = [d for _, _, d in layout(schema)["indexes"]]
    assert not any(word in d for d in indexes for word in (
        "lease", "rev", "state", "updated_at", "attempt", "'running'"))
    assert "CREATE INDEX runs_queue ON Sruns USING btree (status, wake_at, num)" in indexes


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


def test_a_value_the_server_refuses_is_the_writes_fault(store: PostgresStore) -> None:
    from concordia.errors import ValueRefusedError

    with pytest.raises(ValueRefusedError):
        create(store, "r-\x00")


def test_a_claim_passes_over_rows_another_transaction_has_locked(store: PostgresStore,
                                                                 schema: str) -> None:
    create(store, "locked")
    create(store, "free")
    with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
        conn.execute(f'SELECT 1 FROM "{schema}".runs WHERE id=%s FOR UPDATE', ("locked",))
        started = time.monotonic()
        assert store.claim_due(transitions.claim("w", T, 10, T + 30)) == ["free"]
        assert time.monotonic() - started < 2.0  # passed over, not waited for
    assert store.claim_due(transitions.claim("w2", T, 10, T + 30)) == ["locked"]


def test_commits_that_make_a_run_due_wake_listeners_of_this_store_only(
        store: PostgresStore) -> None:
    other_schema = new_schema()
    other = open_store(schema_url(other_schema))
    woken = threading.Event()
    stop = store.listen(woken.set)

    def wakes(write: Any) -> bool:
        woken.clear()
        write()
        return woken.wait(0.5 if not expected_wake[0] else 5)

    expected_wake = [False]
    try:
        assert woken.wait(10)  # the first call comes when listening starts
        assert not wakes(lambda: create(other, "elsewhere"))
        assert not wakes(lambda: create(store, "mine", owner="me", expires=T + 30))
        held = create(store, "held", RunStatus.SUSPENDED, owner="me", expires=T + 30,
                      steps=(step("child", StepStatus.AWAITING),))
        assert not wakes(lambda: store.patch(transitions.checkpoint(
            "mine", "nope", 1, "me", {}, T)))
        expected_wake[0] = True
        assert wakes(lambda: create(store, "free-for-all"))
        assert wakes(lambda: store.leases(transitions.release("me", ["mine"])))
        assert wakes(lambda: store.patch(transitions.wake("held", "child", T)))
        assert wakes(lambda: advance(store, store.get_run("free-for-all") or held,
                                     state="again"))
    finally:
        stop()
        other.close()
        drop_schema(other_schema)


def test_a_steps_commit_is_one_statement_updating_rows_in_place(
        store: PostgresStore, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from concordia.store.sql.postgres import PgTx

    current = create(store, "r-1", owner="w", expires=T + 30,
                     steps=tuple(step(f"s{i}") for i in range(5)))
    statements: list[str] = []
    execute = PgTx._execute

    def counting(self: PgTx, text: str, args: Any) -> Any:
        statements.append(text)
        return execute(self, text, args)

    monkeypatch.setattr(PgTx, "_execute", counting)
    for i in range(5):
        statements.clear()
        advance(store, current, state=f"run_{i + 1}", lease_expires=T + 30 + i,
                steps=[step(f"s{i}", StepStatus.SUCCEEDED, 1, result={"i": i})],
                history=[line("r-1", "step.succeeded", f"s{i}")])
        assert len(statements) == 1, statements
    store.close()  # its connections end, and their counts reach the statistics
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(PG_BASE) as conn:
            stats = {r[0]: r[1:] for r in conn.execute(
                "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE schemaname = %s", (schema,)).fetchall()}
        if stats["runs"][0] >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stats["runs"] == (5, 5)  # the run's row, updated in place each time
    assert stats["steps"][1] == stats["steps"][0] >= 4


def test_a_batch_of_commits_and_a_deadlock_free_release(store: PostgresStore) -> None:
    for i in range(6):
        create(store, f"r-{i}", owner="w", expires=T + 30)
    runs = [store.get_run(f"r-{i}") for i in range(6)]
    commits = [Commit(run=r, expect_rev=1, history=[line(r.id, "h")]) for r in runs if r]
    errors: list[BaseException] = []

    def release() -> None:
        try:
            for _ in range(20):
                store.leases(transitions.release("w", [f"r-{i}" for i in reversed(range(6))]))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    thread = threading.Thread(target=release)
    thread.start()
    assert store.commit_many(commits) == [None] * 6
    thread.join(30)
    assert errors == []
    assert {r.rev for r in store.list_runs()} == {2}
    assert run("x").rev == 0


def test_a_url_keeps_its_libpq_options_and_names_its_schema_apart() -> None:
    from concordia.store.postgres import split_url

    assert split_url("postgresql://h/db?options=-c%20statement_timeout%3D5s&schema=s1"
                     "&sslmode=require") == (
        "postgresql://h/db?options=-c%20statement_timeout%3D5s&sslmode=require", "s1")
    assert split_url("postgresql://h/db") == ("postgresql://h/db", None)
