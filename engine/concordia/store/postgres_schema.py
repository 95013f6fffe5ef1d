"""The PostgreSQL store's schema: the numbered migrations that build it, and the schema as
it stands (a test builds one database each way and asserts they are the same).

Shaped for many workers on one database. A run's row carries its fields and its lease;
runs are queued by one index, (status, wake time, key): claiming walks the running runs
in order and the due timers of each kind by time, whatever the number of ended runs.
Step records and a fan-out's item records are typed rows, one per step or item a run has
touched, keyed by the run's integer key, so a commit writes the records it changed and
nothing else. History is one row per commit (a JSON array of lines) keyed by (run, a
sequence), appended, never rewritten. No index covers a column most commits change (the
lease, the revision, a record's status): with room left on each page, a step's commit
updates the run's row and its record in place (HOT updates). JSON is kept as ``text`` so
that a result reads back exactly as it was written (``jsonb`` would reorder keys and
rewrite numbers). Events are identified by ``source`` and ``id`` together, as
CloudEvents says. ``schema_version`` records the last migration applied.
"""

from __future__ import annotations

from concordia.store.sql.dialect import Migrations, Step
from concordia.store.sql.legacy import mover

# Schema 1's tables and indexes that schema 6 replaced.
_REPLACED: list[Step] = [
    "CREATE INDEX runs_status ON runs (status, num)",
    """CREATE TABLE steps (
        run_id TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (run_id, name))""",
    """CREATE TABLE history (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT NOT NULL,
        entries TEXT NOT NULL)""",
    "CREATE INDEX history_run ON history (run_id, seq)",
]
_TABLES: list[Step] = [
    """CREATE TABLE runs (
        num BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE,
        saga TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
        state TEXT NOT NULL, input TEXT NOT NULL, correlation_id TEXT NOT NULL,
        causation_id TEXT, cause TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, wake_at DOUBLE PRECISION, error TEXT,
        cancel_reason TEXT, compensated_any BOOLEAN NOT NULL DEFAULT FALSE,
        rev INTEGER NOT NULL, lease_owner TEXT, lease_expires DOUBLE PRECISION)""",
    *_REPLACED,
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
# (Frozen as it was; schema 6 replaced it by an index whose use names no status.)
_DUE_INDEX = ("CREATE INDEX runs_due ON runs (wake_at, num) "
              "WHERE status IN ('running', 'waiting', 'suspended')")

# Room on each page for the next version of a row: an update that changes no indexed
# column (a step's commit mid-pass: the run's state, lease, revision) then stays on its
# page and touches no index (a HOT update). No index may cover the lease for the same
# reason: every commit renews it.
_ROOM: list[Step] = ["ALTER TABLE runs SET (fillfactor = 70)",
                     "ALTER TABLE steps SET (fillfactor = 70)"]

# A child saga's run names the run and step that started it.
_CHILDREN: list[Step] = ["ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
             "ALTER TABLE runs ADD COLUMN parent_step TEXT"]

# The operators' queries (the HTTP API's listings): the runs of one correlation id.
_CORRELATION: list[Step] = ["CREATE INDEX runs_correlation ON runs (correlation_id)"]

# 6: step records as typed columns instead of JSON arrays read by position, keyed by the
# run's integer key; a fan-out's items in a table of their own (they were step records
# named ``step[index]``); history keyed by (run, sequence), one index instead of two;
# one index queueing runs by (status, wake time) in place of a status index and a
# partial index whose condition named statuses.
_STEPS = """CREATE TABLE steps (
    run BIGINT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    result TEXT, checkpoint TEXT, error TEXT, wake_at DOUBLE PRECISION, comp_status TEXT,
    comp_attempt INTEGER NOT NULL, comp_error TEXT, started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION, error_detail TEXT, caught INTEGER, items TEXT,
    PRIMARY KEY (run, name)) WITH (fillfactor = 70)"""
_ITEMS = """CREATE TABLE items (
    run BIGINT NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
    attempt INTEGER NOT NULL, result TEXT, checkpoint TEXT, error TEXT,
    wake_at DOUBLE PRECISION, comp_status TEXT, comp_attempt INTEGER NOT NULL,
    comp_error TEXT, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    error_detail TEXT, caught INTEGER, PRIMARY KEY (run, step, idx)) WITH (fillfactor = 70)"""
_HISTORY = """CREATE TABLE history (
    run BIGINT NOT NULL, seq BIGINT GENERATED ALWAYS AS IDENTITY, entries TEXT NOT NULL,
    PRIMARY KEY (run, seq))"""
_QUEUE = "CREATE INDEX runs_queue ON runs (status, wake_at, num)"
_TYPED: list[Step] = [
    "ALTER TABLE steps RENAME TO steps_v5",
    "ALTER INDEX steps_pkey RENAME TO steps_v5_pkey",
    _STEPS,
    _ITEMS,
    mover("SELECT s.run_id, s.name, r.num, s.name, s.record FROM steps_v5 s "
          "JOIN runs r ON r.id = s.run_id WHERE {where}", "s.run_id, s.name"),
    "DROP TABLE steps_v5",
    "ALTER TABLE history RENAME TO history_v5",
    "ALTER INDEX history_pkey RENAME TO history_v5_pkey",
    "ALTER SEQUENCE history_seq_seq RENAME TO history_v5_seq_seq",
    _HISTORY,
    """INSERT INTO history (run, entries) SELECT r.num, h.entries FROM history_v5 h
        JOIN runs r ON r.id = h.run_id ORDER BY h.seq""",
    "DROP TABLE history_v5",
    "DROP INDEX runs_status",
    "DROP INDEX runs_due",
    _QUEUE,
]

MIGRATIONS: Migrations = [
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
    # 6: typed step and item records (see _TYPED).
    (6, _TYPED),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The schema as it stands, written out whole: a database built from it must equal one
# built by the migrations (tests/store/test_postgres.py).
SCHEMA: list[Step] = [*(t for t in _TABLES if t not in _REPLACED), _ROOM[0], *_CHILDREN,
                     *_CORRELATION, _STEPS, _ITEMS, _HISTORY, _QUEUE]
