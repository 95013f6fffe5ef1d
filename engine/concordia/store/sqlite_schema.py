"""The SQLite store's schema: the numbered migrations that build it, the schema as it stands
(a test builds one database each way and asserts they are the same), and why it is shaped
so.

Every page a transaction dirties is written to the WAL and synced, and every statement
costs CPU, so a step's commit should touch little. A run's row carries its fields, its
lease and the tail of its history (lines appended as text; the tail moves to ``history``,
one row per move keyed by the run's integer key in the high 32 bits so a run's lines
cluster without an index, when it outgrows ``TAIL_LIMIT`` and when the run ends). Step
records live in ``steps`` and a fan-out's item records in ``items``, typed columns
clustered by the run's key (``WITHOUT ROWID``: one B-tree each), one row per step or item
the run has touched: a commit writes the records it changed and nothing else, so its cost
does not grow with the length of the saga, and a row never outgrows its page. Runs are
queued by one index, (status, wake time): running runs, then each kind of timer, each
walked in order. Events are identified by ``source`` and ``id`` together, as CloudEvents
says. ``PRAGMA user_version`` records the last migration applied.
"""

from __future__ import annotations

from concordia.store.sql.dialect import Migrations
from concordia.store.sql.legacy import mover

_STEPS = """CREATE TABLE steps (
    run INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    result TEXT, checkpoint TEXT, error TEXT, wake_at REAL, comp_status TEXT,
    comp_attempt INTEGER NOT NULL, comp_error TEXT, started_at REAL, finished_at REAL,
    error_detail TEXT, caught INTEGER, items TEXT, PRIMARY KEY (run, name)) WITHOUT ROWID"""
_ITEMS = """CREATE TABLE items (
    run INTEGER NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
    attempt INTEGER NOT NULL, result TEXT, checkpoint TEXT, error TEXT, wake_at REAL,
    comp_status TEXT, comp_attempt INTEGER NOT NULL, comp_error TEXT, started_at REAL,
    finished_at REAL, error_detail TEXT, caught INTEGER,
    PRIMARY KEY (run, step, idx)) WITHOUT ROWID"""

MIGRATIONS: Migrations = [
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
    # 4: leases; step records out of the run's row (a commit writes only the steps it
    # changed, whatever the saga's length); the inbox and the events keyed by source and
    # id; the outbox pointing at its event's row.
    (4, [
        "ALTER TABLE runs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE runs ADD COLUMN lease_expires REAL",
        """CREATE TABLE steps (
            num INTEGER NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL,
            PRIMARY KEY (num, name)) WITHOUT ROWID""",
        """INSERT INTO steps (num, name, record)
            SELECT r.num, j.key, j.value FROM runs r, json_each(r.steps) j""",
        "ALTER TABLE runs DROP COLUMN steps",
        """CREATE TABLE inbox_v4 (
            source TEXT NOT NULL, id TEXT NOT NULL, received_at REAL NOT NULL,
            PRIMARY KEY (source, id)) WITHOUT ROWID""",
        """INSERT OR IGNORE INTO inbox_v4 (source, id, received_at)
            SELECT COALESCE(json_extract(e.envelope, '$.source'), ''), i.id, i.received_at
            FROM inbox i LEFT JOIN events e ON e.id = i.id""",
        "DROP TABLE inbox",
        "ALTER TABLE inbox_v4 RENAME TO inbox",
        """CREATE TABLE events_v4 (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL, source TEXT NOT NULL, run_id TEXT,
            type TEXT NOT NULL, direction TEXT NOT NULL, persistent INTEGER NOT NULL,
            envelope TEXT NOT NULL, UNIQUE (id, source))""",
        """INSERT INTO events_v4 (seq, id, source, run_id, type, direction, persistent,
            envelope) SELECT rowid, id, COALESCE(json_extract(envelope, '$.source'), ''),
            run_id, type, direction, persistent, envelope FROM events ORDER BY rowid""",
        """CREATE TABLE outbox_v4 (
            seq INTEGER PRIMARY KEY, event INTEGER NOT NULL, published_at REAL)""",
        """INSERT INTO outbox_v4 (seq, event, published_at)
            SELECT o.seq, e.seq, o.published_at FROM outbox o
            JOIN events_v4 e ON e.id = o.event_id AND e.direction = 'out'""",
        "DROP TABLE outbox",
        "DROP TABLE events",
        "ALTER TABLE events_v4 RENAME TO events",
        "ALTER TABLE outbox_v4 RENAME TO outbox",
        "CREATE INDEX events_run ON events (run_id)",
        "CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL",
    ]),
    # 5: child sagas: a child run names the run and step that started it. (Step records
    # gained fields too, appended to their JSON array: older rows read as they are.)
    (5, [
        "ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
        "ALTER TABLE runs ADD COLUMN parent_step TEXT",
    ]),
    # 6: the operators' queries (RunQueries): the runs of one correlation id. The column is
    # written once, when a run is created, so the index costs a run's creation one entry
    # and its steps nothing. Runs of one saga are found newest first by walking the table
    # backwards (sagas are few, each with many runs), so they need no index of their own.
    (6, [
        "CREATE INDEX runs_correlation ON runs (correlation_id)",
    ]),
    # 7: step records as typed columns instead of JSON arrays read by position, and a
    # fan-out's items in a table of their own (they were step records named
    # ``step[index]``); decisions in the order they were recorded by a key of their own.
    (7, [
        "ALTER TABLE steps RENAME TO steps_v6",
        _STEPS,
        _ITEMS,
        mover("SELECT num, name, num, name, record FROM steps_v6 WHERE {where}", "num, name"),
        "DROP TABLE steps_v6",
        """CREATE TABLE decisions_v7 (
            seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL,
            step TEXT, record TEXT NOT NULL)""",
        """INSERT INTO decisions_v7 (seq, decision_id, run_id, step, record)
            SELECT rowid, decision_id, run_id, step, record FROM decisions ORDER BY rowid""",
        "DROP TABLE decisions",
        "ALTER TABLE decisions_v7 RENAME TO decisions",
        "CREATE INDEX decisions_run ON decisions (run_id)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
