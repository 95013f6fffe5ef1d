"""The journal on SQL: every write and query of the store protocol, written once for every
database, over a :class:`~concordia.store.sql.dialect.Dialect`.

It applies what :mod:`concordia.store.changes` describes and holds no rule of its own: a
patch's guards become a condition (:mod:`concordia.store.sql.guards`), statuses are
parameters, and whatever is a status set comes from :mod:`concordia.status`. Each public
write is one transaction; :meth:`SqlStore.write_batch` runs several in one (one flush to
disk), and :meth:`SqlStore.commit_many` hands several runs' commits to the dialect at once.

Concurrency is optimistic: a commit writes a run only at the revision its writer read. A
patch locks its run's row (and its step's) before testing its guards, where the database
has row locks; the writes of every other kind lock the run's row first too, so what the
guards read stays as read until the patch is written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from concordia.errors import StoreError
from concordia.status import ACTIVE, ENDED, TIMED_RUN, RunStatus
from concordia.store.base import ConflictError, Write
from concordia.store.changes import (
    Claim,
    Commit,
    Delivered,
    Inbound,
    LeaseChange,
    Patch,
    Patched,
    RunField,
)
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    HistoryEntry,
    Loaded,
    RunRecord,
)
from concordia.store.sql import rows
from concordia.store.sql.dialect import Dialect, RetryError, Row, Tx, expected
from concordia.store.sql.guards import condition

_RUNNING = RunStatus.RUNNING.value
_TIMED = sorted(s.value for s in TIMED_RUN)
_ACTIVE = sorted(s.value for s in ACTIVE)
_R_COLS = ", ".join(f"r.{c}" for c in rows.RUN_COLUMNS)
_INSERT_EVENT = ("INSERT INTO events (id, source, run_id, type, direction, persistent, "
                 "envelope) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id, source) DO NOTHING "
                 "RETURNING seq")
_AWAIT_COLS = "run_id, step, event_type, key, saga, version"
_BUFFERED_COLS = "event_id, event_type, key, envelope, expires_at"
# A lease nobody but ``owner`` holds live at ``now`` (parameters: owner, now).
_FREE_FOR = "(lease_owner IS NULL OR lease_owner = ? OR lease_expires <= ?)"


def _typed_null(column: str) -> str:
    kind = ("INTEGER" if column in rows.INTEGER_COLUMNS else
            "DOUBLE PRECISION" if column in rows.REAL_COLUMNS else "TEXT")
    return f"CAST(NULL AS {kind})"


def _load_sql() -> str:
    """A run, its steps and its items in one statement (one snapshot): rows of one shape,
    the run's columns then a record's (a step's and an item's share their places)."""
    record = ("name", "idx", *rows.ATTEMPT_COLUMNS, "items")
    no_run = ", ".join(["NULL"] * len(rows.RUN_COLUMNS))
    attempts = ", ".join(rows.ATTEMPT_COLUMNS)
    num = "(SELECT num FROM runs WHERE id = ?)"
    return (f"SELECT 0, {rows.RUN_COLS}, {', '.join(map(_typed_null, record))} FROM runs "
            f"WHERE id = ? UNION ALL SELECT 1, {no_run}, name, NULL, {attempts}, items "
            f"FROM steps WHERE run = {num} UNION ALL SELECT 2, {no_run}, step, idx, "
            f"{attempts}, NULL FROM items WHERE run = {num}")


_LOAD = _load_sql()
_RECORD = 1 + len(rows.RUN_COLUMNS)  # where a record's columns start in a loaded row


class _Local(threading.local):
    tx: Tx | None = None  # the transaction write_batch holds for this thread


class _Undo(Exception):
    """Roll one delivery's savepoint back and report ``outcome``."""

    def __init__(self, outcome: Delivered) -> None:
        self.outcome = outcome


class _Undone(Exception):
    """A write in a batch failed after writing: the batch is undone and written again."""


def _due(run: RunRecord) -> bool:
    """Whether a run as written is due for any worker (runnable, and nobody's)."""
    return run.status == RunStatus.RUNNING and run.lease_owner is None


class SqlStore:
    """A :class:`~concordia.store.base.Store` on a SQL database (see the module docstring);
    it answers :class:`~concordia.store.base.RunQueries` and offers
    :class:`~concordia.store.base.Batching`."""

    does_io = True

    def __init__(self, url: str, dialect: Dialect, *, readonly: bool) -> None:
        self.url = url
        self.readonly = readonly
        self.dialect = dialect
        self._local = _Local()
        d = dialect
        # Due runs for anyone (False) or for an owner (True): see due_runs.
        self._due_sql = {mine: (
            "SELECT id, 0, wake_at, num FROM (SELECT id, wake_at, num FROM runs WHERE "
            f"status = ?{free} ORDER BY wake_at, num LIMIT ?) AS a UNION ALL SELECT id, 1, "
            "wake_at, num FROM (SELECT id, wake_at, num FROM runs WHERE "
            f"{d.among('status')} AND wake_at <= ?{free} ORDER BY wake_at, num LIMIT ?) AS b")
            for mine, free in ((False, ""), (True, f" AND {_FREE_FOR}"))}
        claim = ("UPDATE runs SET lease_owner = ?, lease_expires = ? WHERE num IN (SELECT num "
                 "FROM runs WHERE {which} AND " + _FREE_FOR + f" AND NOT {d.among('id')} "
                 f"ORDER BY wake_at, num LIMIT ?{d.skip_locked}) RETURNING id, wake_at, num")
        self._claim_running = claim.format(which="status = ?")
        self._claim_timers = claim.format(which=f"{d.among('status')} AND wake_at <= ?")

    # -- plumbing ----------------------------------------------------------------------------

    def _tx(self, alone: bool = False) -> AbstractContextManager[Tx]:
        """One write transaction (inside :meth:`write_batch`, part of the batch's);
        ``alone``: for a write of one statement, or a plain commit or creation (see
        Dialect.alone)."""
        if self.readonly:
            raise StoreError(f"{self.dialect.where} was opened read-only")
        held = self._local.tx
        if held is not None:
            return nullcontext(held)
        return self.dialect.alone() if alone else self.dialect.transaction()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.dialect.read(lambda tx: tx.all(sql, args))

    def write_batch(self, writes: Sequence[Write]) -> list[tuple[Any, BaseException | None]]:
        """Several writes in one transaction and one flush to disk.

        The writes of this store refuse (ConflictError) before they write anything, so the
        batch needs no savepoint per write. Any other failure undoes the whole transaction,
        and the batch is then written again with a savepoint around each write, so that the
        one failing write does not take the others with it. A race the database detected
        (a deadlock with another process's batch) is written again.
        """
        if self.readonly:
            return [(None, StoreError(f"{self.dialect.where} was opened read-only"))
                    ] * len(writes)
        savepoints = False
        for attempt in range(5):
            try:
                if len(writes) == 1:  # its own transaction, as cheap as the write allows
                    return [self._one(None, writes[0], True)]
                return self._batch(writes, savepoints)
            except _Undone:
                savepoints = True
            except RetryError as exc:
                if attempt == 4:
                    return [(None, exc)] * len(writes)
            except StoreError as exc:
                return [(None, exc)] * len(writes)
        return [(None, StoreError(f"{self.dialect.where}: a batch kept failing"))
                ] * len(writes)

    def _batch(self, writes: Sequence[Write], savepoints: bool
               ) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        with self.dialect.transaction() as tx:
            self._local.tx = tx
            try:
                for fn in writes:
                    out.append(self._one(tx, fn, savepoints))
            finally:
                self._local.tx = None
        return out

    def _one(self, tx: Tx | None, fn: Write, alone: bool) -> tuple[Any, BaseException | None]:
        """A write of a batch (in ``tx``; ``alone``: undone alone if it fails, in a
        savepoint of ``tx`` or, without one, its own transaction)."""
        if not alone:
            try:
                return fn(self), None
            except ConflictError as exc:  # refused before it wrote anything
                return None, exc
            except RetryError:
                raise
            except Exception:
                raise _Undone() from None
        try:
            with nullcontext() if tx is None else tx.savepoint():
                return fn(self), None
        except RetryError:
            raise
        except Exception as exc:
            return None, exc

    # -- commits -----------------------------------------------------------------------------

    def create(self, commit: Commit) -> None:
        with self._tx(commit.plain) as tx:
            self._create(tx, commit)

    def _create(self, tx: Tx, c: Commit) -> None:
        run = c.run
        rev, run.rev = run.rev, 1
        if self.dialect.insert_run(tx, c) is None:
            run.rev = rev
            raise ConflictError(run.id)
        self._rest(tx, c)
        if _due(run):
            tx.due()

    def commit(self, commit: Commit) -> None:
        with self._tx(commit.plain) as tx:
            self._commit(tx, commit)

    def _commit(self, tx: Tx, c: Commit) -> None:
        if self._unseen_buffered(tx, c):
            raise ConflictError(c.run.id)  # refused before anything is written
        written = self.dialect.update_runs(tx, [c])[0]
        if written is None:
            raise ConflictError(c.run.id)
        self._committed(tx, c, written[1])

    def commit_many(self, commits: Sequence[Commit]) -> list[ConflictError | None]:
        with self._tx() as tx:
            if len({c.run.id for c in commits}) != len(commits):  # in order, one by one
                return [self._refusal(tx, c) for c in commits]
            refused = [self._unseen_buffered(tx, c) for c in commits]
            written = iter(self.dialect.update_runs(
                tx, [c for c, no in zip(commits, refused, strict=True) if not no]))
            out: list[ConflictError | None] = []
            for c, no in zip(commits, refused, strict=True):
                done = None if no else next(written)
                if done is None:
                    out.append(ConflictError(c.run.id))
                else:
                    self._committed(tx, c, done[1])
                    out.append(None)
            return out

    def _refusal(self, tx: Tx, c: Commit) -> ConflictError | None:
        try:
            self._commit(tx, c)
        except ConflictError as exc:
            return exc
        return None

    def _committed(self, tx: Tx, c: Commit, cancel_reason: str | None) -> None:
        """What follows a run's row written at its new revision."""
        c.run.rev = expected(c) + 1
        if cancel_reason is not None:  # asked for meanwhile: the first reason wins
            c.run.cancel_reason = cancel_reason
        self._rest(tx, c)
        if _due(c.run):
            tx.due()  # left runnable for anyone: a retry, a stopping worker

    def _unseen_buffered(self, tx: Tx, c: Commit) -> bool:
        """Whether an early event for one of the commit's new awaits was buffered that its
        writer has not seen."""
        if not c.awaits_add:
            return False
        tx.serialise([a.event_type for a in c.awaits_add])
        seen = set(c.buffered_seen)
        return any(b.event_id not in seen for a in c.awaits_add
                   for b in self._buffered(tx, a.event_type, a.key, c.run.updated_at))

    def _rest(self, tx: Tx, c: Commit) -> None:
        """Write what a commit adds besides the run and its records (most add nothing)."""
        if c.plain:
            return
        rid = c.run.id
        for e in c.events:
            env = e["envelope"]
            row = tx.one(_INSERT_EVENT, (env["id"], env["source"], rid, env["type"], "out",
                                         bool(e["persistent"]), rows.encode(env)))
            if e["persistent"] and row is not None:
                tx.run("INSERT INTO outbox (event) VALUES (?)", (row[0],))
        if c.decisions:
            tx.many("INSERT INTO decisions (decision_id, run_id, step, record) "
                    "VALUES (?, ?, ?, ?)", [(d["decision_id"], rid, d.get("step"),
                                             rows.encode(d)) for d in c.decisions])
        if c.awaits_remove:
            tx.many("DELETE FROM awaits WHERE run_id = ? AND step = ?", c.awaits_remove)
        if c.awaits_add:
            tx.many(f"INSERT INTO awaits ({_AWAIT_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, step) DO UPDATE SET event_type = excluded.event_type, "
                    "key = excluded.key, saga = excluded.saga, version = excluded.version",
                    [(a.run_id, a.step, a.event_type, a.key, a.saga, a.version)
                     for a in c.awaits_add])
        if c.consume_buffered:
            tx.many("DELETE FROM buffered WHERE event_id = ?",
                    [(i,) for i in c.consume_buffered])
        for patch in c.also:
            self._patch(tx, patch)

    # -- patches -----------------------------------------------------------------------------

    def patch(self, patch: Patch) -> Patched:
        with self._tx() as tx:
            held = self._hold(tx, patch)
            if held is not None and not self._apply(tx, patch, held):
                return Patched(True, rows.run_from(held[1:]))  # the run as held: unchanged
            row = tx.one(f"SELECT {rows.RUN_COLS} FROM runs WHERE id = ?", (patch.run_id,))
        return Patched(held is not None, None if row is None else rows.run_from(row))

    def _patch(self, tx: Tx, p: Patch) -> bool:
        """Apply ``p`` where its guards hold; whether it applied."""
        held = self._hold(tx, p)
        if held is None:
            return False
        self._apply(tx, p, held)
        return True

    def _hold(self, tx: Tx, p: Patch) -> Row | None:
        """The run's key and columns where the patch's guards hold (None where they do not,
        or its run or patched record is missing), locking the run's row and the record's."""
        args: list[Any] = []
        join = ""
        if p.target is not None:
            table, key, values = _target(p)
            join = f" JOIN {table} s ON s.run = r.num AND " + " AND ".join(
                f"s.{k} = ?" for k in key)
            args.extend(values)
        args.append(p.run_id)
        where = condition(p.guards, self.dialect.among, self.dialect.listed, args,
                          record=p.target is not None)
        return tx.one(f"SELECT r.num, {_R_COLS} FROM runs r{join} WHERE r.id = ? AND {where}"
                      f"{self.dialect.lock}", args)

    def _apply(self, tx: Tx, p: Patch, held: Row) -> bool:
        """Write ``p`` over the run ``held`` (see _hold), then its ``then`` where that
        holds; whether the run's row changed."""
        num = held[0]
        status = RunStatus(p.run.get(RunField.STATUS, held[4]))  # as the patch leaves it
        changed = bool(p.run) or p.bump
        if changed:
            sets = [f"{field.value} = ?" for field in p.run]
            if p.bump:
                sets.append("rev = rev + 1")
            tx.run(f"UPDATE runs SET {', '.join(sets)} WHERE num = ?",
                   [*(rows.column_value(f.value, v) for f, v in p.run.items()), num])
        if p.target is not None and p.step:
            table, key, values = _target(p)
            tx.run(f"UPDATE {table} SET {', '.join(f'{f.value} = ?' for f in p.step)} "
                   f"WHERE run = ? AND {' AND '.join(f'{k} = ?' for k in key)}",
                   [*(rows.column_value(f.value, v) for f, v in p.step.items()), num, *values])
        text = rows.history_text(p.history)
        if text is not None:
            self.dialect.append_history(tx, num, text, status in ENDED)
        if RunField.STATUS in p.run and status == RunStatus.RUNNING:
            tx.due()
        if p.then is not None:
            then_held = self._hold(tx, p.then)
            if then_held is not None:
                changed = self._apply(tx, p.then, then_held) or changed
        return changed

    # -- leases ------------------------------------------------------------------------------

    def leases(self, change: LeaseChange) -> list[str]:
        d = self.dialect
        args: list[Any] = []
        if change.expires is None:  # given up: wait for rows being written, in id order
            sets, lock = "lease_owner = NULL, lease_expires = NULL", d.lock
        else:
            # A row another transaction is writing is passed over, not waited for: that is
            # a commit of the run (its owner's, which renews the lease itself, or another
            # worker's taking it over), and waiting could deadlock with the owner's batch.
            sets, lock = "lease_expires = ?", d.skip_locked
            args.append(change.expires)
        args.append(change.owner)
        if change.run_ids is None:
            which = d.among("status")
            args.append(d.listed(_ACTIVE))
        elif change.run_ids:
            which = d.among("id")
            args.append(d.listed(change.run_ids))
        else:
            return []
        with self._tx(alone=True) as tx:  # one statement
            changed = tx.all(f"UPDATE runs SET {sets} WHERE num IN (SELECT num FROM runs "
                             f"WHERE lease_owner = ? AND {which} ORDER BY id{lock}) "
                             "RETURNING id, status", args)
            if change.expires is None and any(r[1] == _RUNNING for r in changed):
                tx.due()
        return [r[0] for r in changed]

    def _claim(self, claim: Claim) -> list[str]:
        """Lease up to ``claim.limit`` due runs to the claimer, passing over rows another
        transaction holds (what :class:`~concordia.store.base.Claiming` offers, where the
        database locks rows)."""
        d = self.dialect
        head = [claim.owner, claim.until]
        tail = [claim.owner, claim.now, d.listed(claim.exclude)]
        with self._tx() as tx:
            running = tx.all(self._claim_running,
                             [*head, _RUNNING, *tail, claim.limit])
            timers: list[Any] = []
            if len(running) < claim.limit:
                timers = tx.all(self._claim_timers, [*head, d.listed(_TIMED), claim.now, *tail,
                                                     claim.limit - len(running)])
        running.sort(key=lambda r: (r[1] is not None, r[1] or 0.0, r[2]))
        timers.sort(key=lambda r: (r[1], r[2]))
        return [r[0] for r in running + timers]

    # -- deliveries --------------------------------------------------------------------------

    def deliver(self, items: Sequence[Inbound]) -> list[Delivered]:
        outcomes: list[Delivered] = []
        with self._tx() as tx:
            for item in items:
                kept = [(c.run, c.run.rev, c.run.cancel_reason)
                        for c in (*item.resumes, *item.creates)]
                try:
                    with tx.savepoint():
                        outcome = self._deliver(tx, item)
                        if outcome != Delivered.APPLIED:
                            raise _Undo(outcome)
                except _Undo as undo:
                    outcome = undo.outcome
                    for run, rev, reason in kept:  # as they were: nothing was written
                        run.rev, run.cancel_reason = rev, reason
                outcomes.append(outcome)
        return outcomes

    def _deliver(self, tx: Tx, item: Inbound) -> Delivered:
        env = item.envelope
        if tx.one("INSERT INTO inbox (source, id, received_at) VALUES (?, ?, ?) "
                  "ON CONFLICT DO NOTHING RETURNING id",
                  (env["source"], env["id"], item.received_at)) is None:
            return Delivered.DUPLICATE
        tx.one(_INSERT_EVENT, (env["id"], env["source"], None, env["type"], "in", True,
                               rows.encode(env)))
        try:
            for c in item.resumes:
                self._commit(tx, c)
            for c in item.creates:
                self._create(tx, c)
        except ConflictError:
            return Delivered.CONFLICT
        if item.buffer:
            tx.serialise([b.event_type for b in item.buffer])
        seen = set(item.awaits_seen)
        for event in item.buffer:
            if any((a.run_id, a.step) not in seen
                   for a in self._awaits(tx, event.event_type, event.key)):
                return Delivered.CONFLICT  # an await registered since it was planned
            self._buffer(tx, event, item.buffer_limit)
        return Delivered.APPLIED

    @staticmethod
    def _buffer(tx: Tx, event: BufferedEvent, limit: int) -> None:
        # Expired events are dropped lazily, when new ones arrive.
        tx.run("DELETE FROM buffered WHERE event_type = ? AND expires_at <= ?",
               (event.event_type, event.expires_at - 2 * 86400.0 * 365))
        count = tx.one("SELECT COUNT(*) FROM buffered WHERE event_type = ?",
                       (event.event_type,))
        if count is not None and count[0] >= limit:
            tx.run("DELETE FROM buffered WHERE event_id = (SELECT event_id FROM buffered "
                   "WHERE event_type = ? ORDER BY expires_at LIMIT 1)", (event.event_type,))
        tx.run(f"INSERT INTO buffered ({_BUFFERED_COLS}) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT (event_id) DO UPDATE SET event_type = excluded.event_type, "
               "key = excluded.key, envelope = excluded.envelope, "
               "expires_at = excluded.expires_at",
               (event.event_id, event.event_type, event.key, rows.encode(event.envelope),
                event.expires_at))

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        if not ids:
            return
        with self._tx(alone=True) as tx:  # one statement
            tx.run(f"UPDATE outbox SET published_at = ? WHERE {self.dialect.among('seq')}",
                   (at, self.dialect.listed(list(ids))))

    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]:
        if not self.readonly and definitions:  # read-only: record nothing, report all
            with self._tx() as tx:
                tx.many("INSERT INTO definitions (saga, version, fingerprint, document) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [(n, v, f, rows.encode(d)) for n, v, f, d in definitions])
        found = self._all("SELECT saga, version, fingerprint FROM definitions")
        return {(r[0], r[1]): r[2] for r in found}

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._all(f"SELECT {rows.RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        return rows.run_from(found[0]) if found else None

    def load(self, run_id: str) -> Loaded | None:
        found = self._all(_LOAD, (run_id, run_id, run_id))
        run = next((rows.run_from(r[1:]) for r in found if r[0] == 0), None)
        if run is None:
            return None
        loaded = Loaded(run, {}, {})
        for r in found:
            if r[0] == 1:
                step = rows.step_from((r[_RECORD], *r[_RECORD + 2:]))
                loaded.steps[step.name] = step
            elif r[0] == 2:
                item = rows.item_from(r[_RECORD:_RECORD + 15])
                loaded.items[item.key] = item
        return loaded

    def history(self, run_id: str) -> list[HistoryEntry]:
        return rows.history_from(run_id, self.dialect.read_history(run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        return self._runs((("status =", status), ("saga =", saga)), "", limit)

    def _runs(self, filters: Sequence[tuple[str, Any]], order: str,
              limit: int) -> list[RunRecord]:
        """Runs in recorded order (``order``: " DESC" for newest first), where each
        ``(column and operator, value)`` holds whose value is given."""
        given = [(test, value) for test, value in filters if value is not None]
        where = " AND ".join(f"{test} ?" for test, _ in given)
        found = self._all(f"SELECT {rows.RUN_COLS} FROM runs{' WHERE ' if given else ''}"
                          f"{where} ORDER BY num{order} LIMIT ?",
                          (*(value for _, value in given), limit))
        return [rows.run_from(r) for r in found]

    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord] | None:
        below = None
        if before is not None:
            found = self._all("SELECT num FROM runs WHERE id = ?", (before,))
            if not found:
                return None
            below = found[0][0]
        return self._runs((("saga =", saga), ("status =", status),
                           ("correlation_id =", correlation_id), ("num <", below)),
                          " DESC", limit)

    def run_counts(self) -> list[tuple[str, str, int]]:
        found = self._all("SELECT saga, status, COUNT(*) FROM runs GROUP BY saga, status")
        return sorted((r[0], r[1], int(r[2])) for r in found)

    def outbox_backlog(self) -> tuple[int, str | None]:
        found = self._all("SELECT COUNT(*), (SELECT e.envelope FROM outbox o JOIN events e "
                          "ON e.seq = o.event WHERE o.published_at IS NULL ORDER BY o.seq "
                          "LIMIT 1) FROM outbox WHERE published_at IS NULL")
        count, oldest = found[0]
        return int(count), None if oldest is None else json.loads(oldest).get("time")

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the unique index of ids, compared by code point (LIKE would need
        # escaping and a scan).
        b = self.dialect.binary
        found = self._all(f"SELECT id FROM runs WHERE id{b} >= ? AND id{b} < ? "
                          f"ORDER BY id{b} LIMIT ?", (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in found]

    def due_runs(self, now: float, limit: int, owner: str | None = None) -> list[str]:
        # Running runs first (leaving those another owner holds a live lease on), then
        # timers due now, earliest first: one index walk for each, stopping at ``limit``.
        free = () if owner is None else (owner, now)
        found = self._all(self._due_sql[owner is not None],
                          (_RUNNING, *free, limit, self.dialect.listed(_TIMED), now, *free,
                           limit))
        found.sort(key=lambda r: (r[1], r[2] if r[1] else 0.0, r[3]))
        return [r[0] for r in found[:limit]]

    def next_wake_at(self) -> float | None:
        # A leased running run is due again when its lease expires (if its worker died
        # meanwhile, another carries it on then).
        found = self._all(
            "SELECT MIN(w) FROM (SELECT MIN(wake_at) AS w FROM runs WHERE status = ? "
            "UNION ALL SELECT MIN(wake_at) FROM runs WHERE status = ? UNION ALL "
            "SELECT MIN(lease_expires) FROM runs WHERE status = ?) AS m",
            (*_TIMED, _RUNNING))
        value = found[0][0] if found else None
        return None if value is None else float(value)

    def lease_holders(self, now: float) -> dict[str, int]:
        found = self._all(f"SELECT lease_owner, COUNT(*) FROM runs WHERE "
                          f"{self.dialect.among('status')} AND lease_owner IS NOT NULL AND "
                          "lease_expires > ? GROUP BY lease_owner",
                          (self.dialect.listed(_ACTIVE), now))
        return {r[0]: int(r[1]) for r in found}

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        found = self.dialect.read(lambda tx: self._awaits(tx, event_type, key))
        return sorted(found, key=lambda a: (a.run_id, a.step))

    @staticmethod
    def _awaits(tx: Tx, event_type: str, key: str | None) -> list[AwaitRecord]:
        query = f"SELECT {_AWAIT_COLS} FROM awaits WHERE event_type = ? AND key IS NULL"
        if key is None:
            found = tx.all(query, (event_type,))
        else:
            # Two index searches: ``key = ? OR key IS NULL`` would scan every await of the
            # type.
            found = tx.all(f"SELECT {_AWAIT_COLS} FROM awaits WHERE event_type = ? AND "
                           f"key = ? UNION ALL {query}", (event_type, key, event_type))
        return [AwaitRecord(*r) for r in found]

    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]:
        return self.dialect.read(lambda tx: self._buffered(tx, event_type, key, now))

    @staticmethod
    def _buffered(tx: Tx, event_type: str, key: str | None,
                  now: float) -> list[BufferedEvent]:
        query = (f"SELECT {_BUFFERED_COLS} FROM buffered WHERE event_type = ? AND "
                 "expires_at > ?")
        if key is None:
            found = tx.all(query, (event_type, now))
        else:
            found = tx.all(f"{query} AND key = ? UNION ALL {query} AND key IS NULL",
                           (event_type, now, key, event_type, now))
        return sorted((BufferedEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in found),
                      key=lambda b: b.event_id)

    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        found = self._all("SELECT o.seq, e.envelope FROM outbox o JOIN events e "
                          "ON e.seq = o.event WHERE o.published_at IS NULL "
                          "ORDER BY o.seq LIMIT ?", (limit,))
        return [(r[0], json.loads(r[1])) for r in found]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        found = self._all("SELECT envelope FROM events WHERE id = ? ORDER BY seq LIMIT 1",
                          (event_id,))
        return json.loads(found[0][0]) if found else None

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        found = self._all("SELECT envelope FROM events WHERE run_id = ? ORDER BY seq",
                          (run_id,))
        return [json.loads(r[0]) for r in found]

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        found = self._all("SELECT record FROM decisions WHERE run_id = ? ORDER BY seq",
                          (run_id,))
        return [json.loads(r[0]) for r in found]

    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None:
        found = self._all("SELECT document FROM definitions WHERE saga = ? AND version = ?",
                          (saga, version))
        return json.loads(found[0][0]) if found else None

    def close(self) -> None:
        self.dialect.close()


def _target(p: Patch) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """The table, key columns (the run's aside) and key values of the record a patch
    names."""
    if isinstance(p.target, str):
        return "steps", ("name",), (p.target,)
    assert p.target is not None
    return "items", ("step", "idx"), p.target
