"""The PostgreSQL store's schema: the numbered migrations that build it, and the schema as
it stands (a test builds one database each way and asserts they are the same).

Shaped for many workers on one database. A run's row carries its fields and its lease;
claiming scans only active runs (a partial index), so it costs the same with a million
ended runs as with none. Step records are one row per step a run has touched, so a
commit writes the steps it changed and nothing else. History is one row per commit (a
JSON array of lines), appended, never rewritten. JSON is kept as ``text`` so that a
result reads back exactly as it was written (``jsonb`` would reorder keys and rewrite
numbers). Events are identified by ``source`` and ``id`` together, as CloudEvents says.
``schema_version`` records the last migration applied.
"""

from __future__ import annotations

_TABLES = [
    """CREATE TABLE runs (
        num BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE,
        saga TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
        state TEXT NOT NULL, input TEXT NOT NULL, correlation_id TEXT NOT NULL,
        causation_id TEXT, cause TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, wake_at DOUBLE PRECISION, error TEXT,
        cancel_reason TEXT, compensated_any BOOLEAN NOT NULL DEFAULT FALSE,
        rev INTEGER NOT NULL, lease_owner TEXT, lease_expires DOUBLE PRECISION)""",
    "CREATE INDEX runs_status ON runs (status, num)",
    """CREATE TABLE steps (
        run_id TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (run_id, name))""",
    """CREATE TABLE history (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT NOT NULL,
        entries TEXT NOT NULL)""",
    "CREATE INDEX history_run ON history (run_id, seq)",
    """CREATE TABLE events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL,
        source TEXT NOT NULL, run_id TEXT, type TEXT NOT NULL, direction TEXT NOT NULL,
        persistent BOOLEAN NOT NULL, envelope TEXT NOT NULL, UNIQUE (id, source))""",
    "CREATE INDEX events_run ON events (run_id)",
    """CREATE TABLE outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event BIGINT NOT NULL,
        published_at DOUBLE PRECISION)""",
    "CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL",
    """CREATE TABLE inbox (
        source TEXT NOT NULL, id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (source, id))""",
    """CREATE TABLE awaits (
        run_id TEXT NOT NULL, step TEXT NOT NULL, event_type TEXT NOT NULL, key TEXT,
        saga TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (run_id, step))""",
    "CREATE INDEX awaits_lookup ON awaits (event_type, key)",
    """CREATE TABLE buffered (
        event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL, key TEXT,
        envelope TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX buffered_lookup ON buffered (event_type, key, expires_at)",
    """CREATE TABLE decisions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        decision_id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL, step TEXT,
        record TEXT NOT NULL)""",
    "CREATE INDEX decisions_run ON decisions (run_id, seq)",
    """CREATE TABLE definitions (
        saga TEXT NOT NULL, version INTEGER NOT NULL, fingerprint TEXT NOT NULL,
        document TEXT NOT NULL, PRIMARY KEY (saga, version))""",
]

# Claiming looks only at active runs: running ones in recorded order, timers by due time.
_DUE_INDEX = ("CREATE INDEX runs_due ON runs (wake_at, num) "
              "WHERE status IN ('running', 'waiting', 'suspended')")

# Room on each page for the next version of a row: an update that changes no indexed
# column (a step's commit mid-pass: the run's state, lease, revision) then stays on its
# page and touches no index (a HOT update). No index may cover the lease for the same
# reason: every commit renews it.
_ROOM = ["ALTER TABLE runs SET (fillfactor = 70)", "ALTER TABLE steps SET (fillfactor = 70)"]

# A child saga's run names the run and step that started it.
_CHILDREN = ["ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
             "ALTER TABLE runs ADD COLUMN parent_step TEXT"]

# The operators' queries (the HTTP API's listings): the runs of one correlation id.
_CORRELATION = ["CREATE INDEX runs_correlation ON runs (correlation_id)"]

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, _TABLES),
    # 2: claiming with SKIP LOCKED scans the active runs only; the status index alone
    # made every claim read every running run's row to test its lease.
    (2, [_DUE_INDEX]),
    # 3: commits mid-pass update the run's row and its step records in place.
    (3, _ROOM),
    # 4: child sagas.
    (4, _CHILDREN),
    # 5: runs listed by correlation id.
    (5, _CORRELATION),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The schema as it stands, written out whole: a database built from it must equal one
# built by the migrations (tests/store/test_postgres.py).
SCHEMA: list[str] = [*_TABLES, _DUE_INDEX, *_ROOM, *_CHILDREN, *_CORRELATION]
