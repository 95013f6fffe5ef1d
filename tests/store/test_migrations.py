"""Stores written by the release before typed records (SQLite schema 6, PostgreSQL schema 5)
open with today's code, migrated: every run reads back as that release read it, the
migrated schema is the one a new store gets, and the runs go on.

The SQLite file was written by that release itself (tests/fixtures/stores/
make_release_store.py says how); ``release-c03dbe1.json`` is what it read back. For
PostgreSQL, the old schema is built by the old migrations and filled with those same
records as that release encoded them (a frozen copy of its encoder, below).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia.status import RunStatus
from concordia.store import open_store
from concordia.store.base import RunQueries, Store
from concordia.store.changes import Commit, Delivered, Inbound
from concordia.store.records import HistoryEntry, ItemRecord, StepRecord
from concordia.store.sqlite import SqliteStore
from tests.pg import PG_BASE, drop_schema, new_schema, schema_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stores"
RELEASE: dict[str, Any] = json.loads(
    (FIXTURES / "release-c03dbe1.json").read_text(encoding="utf-8"))


def _item_name(name: str) -> tuple[str, int] | None:
    if not name.endswith("]"):
        return None
    step, _, index = name[:-1].partition("[")
    return step, int(index)


def _expected_records(steps: dict[str, Any]) -> tuple[dict[str, StepRecord],
                                                      dict[tuple[str, int], ItemRecord]]:
    """The records of today for a run's old step records (items were named step[i])."""
    records: dict[str, StepRecord] = {}
    items: dict[tuple[str, int], ItemRecord] = {}
    item_fields = {f.name for f in dataclasses.fields(ItemRecord)}
    for name, fields in steps.items():
        key = _item_name(name)
        if key is None:
            records[name] = StepRecord(**fields)
        else:
            assert fields["items"] is None
            kept = {k: v for k, v in fields.items() if k in item_fields and k != "name"}
            items[key] = ItemRecord(step=key[0], index=key[1], **kept)
    return records, items


def _typed_keys(where: str) -> tuple[str, str | None]:
    event_type, _, key = where.partition("|")
    return event_type, None if key == "None" else key


def check_reads(store: Store, *, same_seqs: bool) -> None:
    """Everything the release read back from its store reads back the same."""
    runs = RELEASE["runs"]
    assert [r.id for r in store.list_runs(limit=1000)] == list(runs)
    for run_id, expected in runs.items():
        loaded = store.load(run_id)
        assert loaded is not None, run_id
        assert dataclasses.asdict(loaded.run) == expected["run"], run_id
        steps, items = _expected_records(expected["steps"])
        assert loaded.steps == steps, run_id
        assert loaded.items == items, run_id
        assert store.history(run_id) == [HistoryEntry(*h) for h in expected["history"]]
        assert store.run_events(run_id) == expected["events"]
        assert store.decisions(run_id) == expected["decisions"]
    for where, awaits in RELEASE["awaits"].items():
        assert [dataclasses.asdict(a) for a in store.find_awaits(*_typed_keys(where))] == awaits
    for where, buffered in RELEASE["buffered"].items():
        found = store.find_buffered(*_typed_keys(where), RELEASE["now"])
        assert [dataclasses.asdict(b) for b in found] == buffered
    pending = store.outbox_pending(1000)
    assert [e for _, e in pending] == [e for _, e in RELEASE["outbox"]]
    if same_seqs:
        assert [s for s, _ in pending] == [s for s, _ in RELEASE["outbox"]]
    for envelope in RELEASE["inbound"]:
        assert store.get_event(envelope["id"]) == envelope
        again = Inbound(envelope, RELEASE["now"], creates=[])
        assert store.deliver([again]) == [Delivered.DUPLICATE]
    assert store.pin_definitions([]) == {
        (s, int(v)): f for s, _, v in (k.partition("|") for k in RELEASE["fingerprints"])
        for f in [RELEASE["fingerprints"][f"{s}|{v}"]]}
    for where, document in RELEASE["definitions"].items():
        saga, _, version = where.partition("|")
        assert store.pinned_definition(saga, int(version)) == document
    assert isinstance(store, RunQueries)
    assert [list(c) for c in store.run_counts()] == RELEASE["counts"]


def goes_on(store: Store) -> None:
    """The migrated runs move on: a waiting one commits, a new run is created."""
    waiting = next(r for r in store.list_runs(status="waiting", limit=100))
    loaded = store.load(waiting.id)
    assert loaded is not None
    run = loaded.run
    run.status, run.wake_at = RunStatus.RUNNING, None
    store.commit(Commit(run=run, expect_rev=run.rev, history=[
        HistoryEntry(run.id, RELEASE["now"] + 1, "state")]))
    again = store.load(waiting.id)
    assert again is not None
    assert (again.run.rev, again.steps, again.items) == (run.rev, loaded.steps, loaded.items)
    assert store.history(run.id)[-1].kind == "state"
    fresh = dataclasses.replace(run, id="after-migration", rev=0)
    store.create(Commit(run=fresh, steps=[StepRecord("a")], items=[ItemRecord("a", 0)]))
    made = store.load("after-migration")
    assert made is not None
    assert (list(made.steps), list(made.items)) == (["a"], [("a", 0)])


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_layout(path: Path) -> dict[str, Any]:
    """Every table's columns and indexes, and whether it has row ids."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out: dict[str, Any] = {}
        for table in tables:
            columns = sorted(conn.execute(f"PRAGMA table_xinfo({table})").fetchall(),
                             key=lambda c: c[1])
            indexes = sorted(
                (i[1], i[2], i[3], i[4], [c[2] for c in conn.execute(
                    f"PRAGMA index_info({i[1]})")])
                for i in conn.execute(f"PRAGMA index_list({table})").fetchall())
            without_rowid = conn.execute(
                "SELECT wr FROM pragma_table_list WHERE name=?", (table,)).fetchone()
            out[table] = ([c[1:] for c in columns], indexes, without_rowid)
        return out
    finally:
        conn.close()


@pytest.fixture
def release_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "release.db"
    shutil.copyfile(FIXTURES / "release-c03dbe1.db", path)
    return path


def test_the_release_sqlite_store_is_at_schema_6_with_positional_records(
        release_sqlite: Path) -> None:
    conn = sqlite3.connect(release_sqlite)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == RELEASE[
            "schema_version"] == 6
        names = [r[0] for r in conn.execute("SELECT name FROM steps")]
        assert any(n.endswith("]") for n in names)  # items as step records of their own
        record = conn.execute("SELECT record FROM steps LIMIT 1").fetchone()[0]
        assert record.startswith("[")
    finally:
        conn.close()


def test_a_release_sqlite_store_reads_back_the_same_once_migrated(
        release_sqlite: Path, tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{release_sqlite}")
    try:
        assert store.schema_version() == 7
        check_reads(store, same_seqs=True)
        goes_on(store)
    finally:
        store.close()
    fresh = tmp_path / "fresh.db"
    SqliteStore(f"sqlite:///{fresh}").close()
    assert sqlite_layout(release_sqlite) == sqlite_layout(fresh)


def test_a_migrated_sqlite_store_opens_read_only_and_reads_the_same(
        release_sqlite: Path) -> None:
    SqliteStore(f"sqlite:///{release_sqlite}").close()
    reader = open_store(f"sqlite:///{release_sqlite}", readonly=True)
    try:
        run_id = next(iter(RELEASE["runs"]))
        loaded = reader.load(run_id)
        assert loaded is not None
        assert dataclasses.asdict(loaded.run) == RELEASE["runs"][run_id]["run"]
    finally:
        reader.close()


# -- PostgreSQL --------------------------------------------------------------------------------

# The release's encoder, frozen: a step record as a JSON array of its fields in this order.
_OLD_FIELDS = ("status", "attempt", "result", "checkpoint", "error", "wake_at", "comp_status",
               "comp_attempt", "comp_error", "started_at", "finished_at", "error_detail",
               "caught", "items")
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_OLD_RUN = ("id", "saga", "version", "status", "state", "input", "correlation_id",
            "causation_id", "cause", "created_at", "updated_at", "wake_at", "error",
            "cancel_reason", "compensated_any", "rev", "lease_owner", "lease_expires",
            "parent_run_id", "parent_step")


def _old_rows(conn: Any) -> None:
    """The release's rows for every record it read back, as it wrote them."""
    runs = RELEASE["runs"]
    for run_id, expected in runs.items():
        r = expected["run"]
        values = [_encode(r[c]) if c == "input" else r[c] for c in _OLD_RUN]
        conn.execute(f"INSERT INTO runs ({', '.join(_OLD_RUN)}) VALUES "
                     f"({', '.join(['%s'] * len(_OLD_RUN))})", values)
        for name, fields in expected["steps"].items():
            conn.execute("INSERT INTO steps (run_id, name, record) VALUES (%s, %s, %s)",
                         (run_id, name, _encode([fields[f] for f in _OLD_FIELDS])))
        lines = expected["history"]
        for start in range(0, len(lines), 3):  # one row per commit: a few lines each
            conn.execute("INSERT INTO history (run_id, entries) VALUES (%s, %s)",
                         (run_id, _encode([h[1:] for h in lines[start:start + 3]])))
        for envelope in expected["events"]:
            conn.execute("INSERT INTO events (id, source, run_id, type, direction, persistent, "
                         "envelope) VALUES (%s, %s, %s, %s, 'out', true, %s)",
                         (envelope["id"], envelope["source"], run_id, envelope["type"],
                          _encode(envelope)))
        for decision in expected["decisions"]:
            conn.execute("INSERT INTO decisions (decision_id, run_id, step, record) VALUES "
                         "(%s, %s, %s, %s)", (decision["decision_id"], run_id,
                                              decision.get("step"), _encode(decision)))
    for envelope in RELEASE["inbound"]:
        conn.execute("INSERT INTO events (id, source, run_id, type, direction, persistent, "
                     "envelope) VALUES (%s, %s, NULL, %s, 'in', true, %s)",
                     (envelope["id"], envelope["source"], envelope["type"], _encode(envelope)))
    for source, event_id in RELEASE["inbox"]:
        conn.execute("INSERT INTO inbox (source, id, received_at) VALUES (%s, %s, %s)",
                     (source, event_id, RELEASE["now"]))
    for _, envelope in RELEASE["outbox"]:
        conn.execute("INSERT INTO outbox (event) SELECT seq FROM events WHERE id=%s AND "
                     "direction='out'", (envelope["id"],))
    for awaits in RELEASE["awaits"].values():
        for a in awaits:
            conn.execute("INSERT INTO awaits (run_id, step, event_type, key, saga, version) "
                         "VALUES (%(run_id)s, %(step)s, %(event_type)s, %(key)s, %(saga)s, "
                         "%(version)s)", a)
    for buffered in RELEASE["buffered"].values():
        for b in buffered:
            conn.execute("INSERT INTO buffered (event_id, event_type, key, envelope, "
                         "expires_at) VALUES (%s, %s, %s, %s, %s)",
                         (b["event_id"], b["event_type"], b["key"], _encode(b["envelope"]),
                          b["expires_at"]))
    for where, fingerprint in RELEASE["fingerprints"].items():
        saga, _, version = where.partition("|")
        conn.execute("INSERT INTO definitions (saga, version, fingerprint, document) VALUES "
                     "(%s, %s, %s, %s)", (saga, int(version), fingerprint,
                                          _encode(RELEASE["definitions"][where])))


@pytest.fixture
def release_schema() -> Iterator[str]:
    import psycopg

    from concordia.store.postgres_schema import MIGRATIONS

    schema = new_schema()
    with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET LOCAL search_path = "{schema}"')
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, statements in MIGRATIONS[:5]:  # the release's schema, 5
            for statement in statements:
                assert isinstance(statement, str)
                conn.execute(statement.encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        _old_rows(conn)
    yield schema
    drop_schema(schema)


@pytest.mark.postgres
def test_a_release_postgres_store_reads_back_the_same_once_migrated(
        release_schema: str) -> None:
    from tests.store.test_postgres import build_schema, layout

    store = open_store(schema_url(release_schema))
    try:
        check_reads(store, same_seqs=False)
        goes_on(store)
    finally:
        store.close()
    fresh = new_schema()
    try:
        build_schema(fresh)
        assert layout(release_schema) == layout(fresh)
    finally:
        drop_schema(fresh)
