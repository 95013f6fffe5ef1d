"""The in-memory store: the reference semantics, used by unit tests and ``concordia.testing``.

It applies the changes of :mod:`concordia.store.changes` by their Python meaning (a
patch's guards through :func:`~concordia.store.changes.holds`), which the SQL stores
translate. Runs with work are indexed as the SQLite store indexes them: running runs in
the order they became runnable, timers in a heap, so finding due runs costs the same
with a thousand stored runs as with a million.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
from collections.abc import Sequence
from typing import Any

from concordia.status import ACTIVE, RunStatus
from concordia.store.base import ConflictError, Write
from concordia.store.changes import (
    Claim,
    Commit,
    Delivered,
    Inbound,
    LeaseChange,
    Patch,
    Patched,
    holds,
)
from concordia.store.records import (
    AwaitRecord,
    BufferedEvent,
    HistoryEntry,
    ItemKey,
    ItemRecord,
    Loaded,
    RunRecord,
    StepRecord,
    copy_item,
    copy_run,
    copy_step,
)

_TIMED = (RunStatus.WAITING, RunStatus.SUSPENDED)


class MemoryStore:
    """Everything in dicts, guarded by one lock; records are copied in and out."""

    does_io = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.readonly = False
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._items: dict[str, dict[ItemKey, ItemRecord]] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        self._running: dict[str, None] = {}  # running runs, in the order they became so
        self._leased: dict[str, None] = {}  # active runs with a lease owner
        self._timers: list[tuple[float, int, str]] = []  # (wake_at, seq, run id); lazy
        self._seq = itertools.count()
        self._awaits: dict[tuple[str, str], AwaitRecord] = {}
        self._await_index: dict[tuple[str, str | None], set[tuple[str, str]]] = {}
        self._buffered: dict[str, BufferedEvent] = {}
        self._events: dict[tuple[str, str], dict[str, Any]] = {}  # (id, source) -> entry
        self._event_ids: dict[str, tuple[str, str]] = {}  # id -> first (id, source)
        self._outbox: list[tuple[int, tuple[str, str]]] = []  # not yet published
        self._outbox_seq = 0
        self._inbox: set[tuple[str, str]] = set()  # (source, id)
        self._decisions: dict[str, list[dict[str, Any]]] = {}
        self._definitions: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    # -- writes ------------------------------------------------------------------------------

    def create(self, commit: Commit) -> None:
        with self._lock:
            if commit.run.id in self._runs:
                raise ConflictError(commit.run.id)
            self._apply(commit, 1)

    def commit(self, commit: Commit) -> None:
        with self._lock:
            current = self._check(commit)
            if current.cancel_reason is not None:  # a cancellation asked for meanwhile
                commit.run.cancel_reason = current.cancel_reason
            self._apply(commit, current.rev + 1)

    def _check(self, commit: Commit) -> RunRecord:
        """The run as stored; refuse (ConflictError) a commit whose run moved on since it
        was read, or whose new awaits have an early event buffered that its writer has not
        seen."""
        current = self._runs.get(commit.run.id)
        if current is None or (commit.expect_rev is not None
                               and current.rev != commit.expect_rev):
            raise ConflictError(commit.run.id)
        if commit.awaits_add:
            seen = set(commit.buffered_seen)
            if any(b.event_id not in seen for a in commit.awaits_add
                   for b in self.find_buffered(a.event_type, a.key, commit.run.updated_at)):
                raise ConflictError(commit.run.id)
        return current

    def _apply(self, c: Commit, rev: int) -> None:
        c.run.rev = rev
        run = copy_run(c.run)
        self._runs[run.id] = run
        self._index(run)
        steps = self._steps.setdefault(run.id, {})
        for s in c.steps:
            steps[s.name] = copy_step(s)
        if c.items:
            items = self._items.setdefault(run.id, {})
            for i in c.items:
                items[(i.step, i.index)] = copy_item(i)
        self._history.setdefault(run.id, []).extend(c.history)
        if not c.plain:
            self._apply_rest(c, run)

    def _apply_rest(self, c: Commit, run: RunRecord) -> None:
        """What a commit adds besides the run and its records (most commits add none)."""
        for e in c.events:
            env = e["envelope"]
            key = (env["id"], env["source"])
            self._events[key] = {**e, "run_id": run.id, "direction": "out"}
            self._event_ids.setdefault(env["id"], key)
            if e["persistent"]:
                self._outbox_seq += 1
                self._outbox.append((self._outbox_seq, key))
        if c.decisions:
            self._decisions.setdefault(run.id, []).extend(copy.deepcopy(c.decisions))
        for key in c.awaits_remove:
            rec = self._awaits.pop(key, None)
            if rec is not None:
                self._await_index.get((rec.event_type, rec.key), set()).discard(key)
        for rec in c.awaits_add:
            self._awaits[(rec.run_id, rec.step)] = rec
            self._await_index.setdefault((rec.event_type, rec.key), set()).add(
                (rec.run_id, rec.step))
        for event_id in c.consume_buffered:
            self._buffered.pop(event_id, None)
        for patch in c.also:
            self._patch(patch)

    def patch(self, patch: Patch) -> Patched:
        with self._lock:
            applied = self._patch(patch)
            run = self._runs.get(patch.run_id)
            return Patched(applied, copy_run(run) if run is not None else None)

    def _patch(self, patch: Patch) -> bool:
        run = self._runs.get(patch.run_id)
        if run is None:
            return False
        target = patch.target
        record: StepRecord | ItemRecord | None = None
        if isinstance(target, str):
            record = self._steps.get(run.id, {}).get(target)
        elif target is not None:
            record = self._items.get(run.id, {}).get(target)
        if (target is not None and record is None) or not all(
                holds(g, run, record) for g in patch.guards):
            return False
        for field, value in patch.run.items():
            setattr(run, field, value)
        if record is not None:
            for step_field, step_value in patch.step.items():
                setattr(record, step_field, copy.deepcopy(step_value))
        if patch.bump:
            run.rev += 1
        if patch.run:
            self._index(run)
        self._history.setdefault(run.id, []).extend(patch.history)
        if patch.then is not None:
            self._patch(patch.then)
        return True

    def leases(self, change: LeaseChange) -> list[str]:
        with self._lock:
            ids = change.run_ids if change.run_ids is not None else list(self._leased)
            changed = []
            for run_id in ids:
                run = self._runs.get(run_id)
                if run is None or run.lease_owner != change.owner:
                    continue
                if change.expires is None:
                    run.lease_owner = run.lease_expires = None
                    self._leased.pop(run_id, None)
                else:
                    run.lease_expires = change.expires
                changed.append(run_id)
            return changed

    def claim_due(self, claim: Claim) -> list[str]:
        """Not a capability the memory store offers (one process holds it); the contract
        suite uses it to state the claiming semantics the SQL stores must match."""
        with self._lock:
            skip = set(claim.exclude)
            due = [r for r in self.due_runs(claim.now, claim.limit + len(skip), claim.owner)
                   if r not in skip][:claim.limit]
            for run_id in due:
                run = self._runs[run_id]
                run.lease_owner, run.lease_expires = claim.owner, claim.until
                self._leased[run_id] = None
            return due

    def _index(self, run: RunRecord) -> None:
        """Keep the due-run indexes in step with ``run``'s status and wake time, and the
        index of leased runs with its lease."""
        if run.lease_owner is not None and run.status in ACTIVE:
            self._leased[run.id] = None
        else:
            self._leased.pop(run.id, None)
        if run.status == RunStatus.RUNNING:
            self._running.setdefault(run.id, None)
        else:
            self._running.pop(run.id, None)
            if run.status in _TIMED and run.wake_at is not None:
                heapq.heappush(self._timers, (run.wake_at, next(self._seq), run.id))

    def _timer_valid(self, wake_at: float, run_id: str) -> bool:
        run = self._runs.get(run_id)
        return run is not None and run.status in _TIMED and run.wake_at == wake_at

    def write_batch(self, writes: Sequence[Write]) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        for fn in writes:
            try:
                out.append((fn(self), None))
            except Exception as exc:
                out.append((None, exc))
        return out

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return copy_run(run) if run else None

    def load(self, run_id: str) -> Loaded | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            return Loaded(copy_run(run),
                          {k: copy_step(v) for k, v in self._steps[run_id].items()},
                          {k: copy_item(v) for k, v in self._items.get(run_id, {}).items()})

    def history(self, run_id: str) -> list[HistoryEntry]:
        with self._lock:
            return list(self._history.get(run_id, []))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        with self._lock:
            # in the order they were recorded, like the SQLite store's row keys
            runs = (r for r in self._runs.values()
                    if (status is None or r.status == status) and (saga is None or r.saga == saga))
            return [copy_run(r) for r in itertools.islice(runs, limit)]

    # -- operators' queries (RunQueries) --------------------------------------------------

    def page_runs(self, saga: str | None, status: str | None, correlation_id: str | None,
                  before: str | None, limit: int) -> list[RunRecord] | None:
        with self._lock:
            ids = list(self._runs)
            if before is not None:
                if before not in self._runs:
                    return None
                ids = ids[:ids.index(before)]
            out: list[RunRecord] = []
            for run_id in reversed(ids):
                r = self._runs[run_id]
                if ((saga is None or r.saga == saga) and (status is None or r.status == status)
                        and (correlation_id is None or r.correlation_id == correlation_id)):
                    out.append(copy_run(r))
                    if len(out) >= limit:
                        break
            return out

    def run_counts(self) -> list[tuple[str, str, int]]:
        with self._lock:
            counts: dict[tuple[str, str], int] = {}
            for r in self._runs.values():
                key = (r.saga, str(r.status))
                counts[key] = counts.get(key, 0) + 1
            return [(saga, status, n) for (saga, status), n in sorted(counts.items())]

    def outbox_backlog(self) -> tuple[int, str | None]:
        with self._lock:
            if not self._outbox:
                return 0, None
            oldest = self._events[self._outbox[0][1]]["envelope"].get("time")
            return len(self._outbox), oldest

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        with self._lock:
            return sorted(r for r in self._runs if r.startswith(prefix))[:limit]

    def due_runs(self, now: float, limit: int, owner: str | None = None) -> list[str]:
        # Like the SQL stores: running runs first, then due timers, earliest first; none
        # that another owner holds a live lease on (a worker's claim takes timers too).
        with self._lock:
            due: list[str] = []
            for run_id in self._running:
                if len(due) >= limit:
                    return due
                if owner is None or not self._runs[run_id].leased_to_other(owner, now):
                    due.append(run_id)
            taken: list[tuple[float, int, str]] = []
            while self._timers and len(due) < limit and self._timers[0][0] <= now:
                entry = heapq.heappop(self._timers)
                if self._timer_valid(entry[0], entry[2]) and entry[2] not in due:
                    taken.append(entry)
                    if owner is None or not self._runs[entry[2]].leased_to_other(owner, now):
                        due.append(entry[2])
            for entry in taken:  # still theirs until the runs move on
                heapq.heappush(self._timers, entry)
            return due

    def next_wake_at(self) -> float | None:
        with self._lock:
            while self._timers and not self._timer_valid(self._timers[0][0],
                                                         self._timers[0][2]):
                heapq.heappop(self._timers)
            times = [self._timers[0][0]] if self._timers else []
            # a leased running run is due again when its lease expires
            times += [run.lease_expires for run in map(self._runs.__getitem__, self._running)
                      if run.lease_expires is not None]
            return min(times) if times else None

    def lease_holders(self, now: float) -> dict[str, int]:
        with self._lock:
            holders: dict[str, int] = {}
            for run in map(self._runs.__getitem__, self._leased):
                if run.lease_owner is not None and (run.lease_expires or 0.0) > now:
                    holders[run.lease_owner] = holders.get(run.lease_owner, 0) + 1
            return holders

    # -- events ------------------------------------------------------------------------------

    def _record_inbox(self, envelope: dict[str, Any], at: float) -> bool:
        key = (envelope["source"], envelope["id"])
        if key in self._inbox:
            return False
        self._inbox.add(key)
        ekey = (envelope["id"], envelope["source"])
        self._events.setdefault(ekey, {"envelope": copy.deepcopy(envelope), "persistent": True,
                                       "run_id": None, "direction": "in"})
        self._event_ids.setdefault(envelope["id"], ekey)
        return True

    def deliver(self, items: Sequence[Inbound]) -> list[Delivered]:
        outcomes: list[Delivered] = []
        with self._lock:
            for item in items:
                outcomes.append(self._deliver(item))
        return outcomes

    def _deliver(self, item: Inbound) -> Delivered:
        env = item.envelope
        if (env["source"], env["id"]) in self._inbox:
            return Delivered.DUPLICATE
        if any(c.run.id in self._runs for c in item.creates):
            return Delivered.CONFLICT
        try:
            for c in item.resumes:
                self._check(c)
        except ConflictError:
            return Delivered.CONFLICT
        seen = set(item.awaits_seen)
        if any((a.run_id, a.step) not in seen for b in item.buffer
               for a in self.find_awaits(b.event_type, b.key)):
            return Delivered.CONFLICT  # an await registered since it was planned
        self._record_inbox(env, item.received_at)
        for c in item.resumes:
            current = self._runs[c.run.id]
            if current.cancel_reason is not None:
                c.run.cancel_reason = current.cancel_reason
            self._apply(c, current.rev + 1)
        for c in item.creates:
            self._apply(c, 1)
        for event in item.buffer:
            self._buffer(event, item.buffer_limit)
        return Delivered.APPLIED

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        with self._lock:
            keys = set(self._await_index.get((event_type, key), set()))
            if key is not None:  # awaits whose match has no indexable key see every event
                keys |= self._await_index.get((event_type, None), set())
            return [self._awaits[k] for k in sorted(keys)]

    def _buffer(self, event: BufferedEvent, limit: int) -> None:
        same_type = [b for b in self._buffered.values() if b.event_type == event.event_type]
        if len(same_type) >= limit:
            oldest = min(same_type, key=lambda b: b.expires_at)
            del self._buffered[oldest.event_id]
        self._buffered[event.event_id] = event

    def find_buffered(self, event_type: str, key: str | None,
                      now: float) -> list[BufferedEvent]:
        with self._lock:
            return sorted((b for b in self._buffered.values()
                           if b.event_type == event_type and b.expires_at > now
                           and (key is None or b.key is None or b.key == key)),
                          key=lambda b: b.event_id)

    def outbox_pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(seq, copy.deepcopy(self._events[key]["envelope"]))
                    for seq, key in self._outbox[:limit]]

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        with self._lock:
            done = set(ids)
            self._outbox = [(s, e) for s, e in self._outbox if s not in done]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            key = self._event_ids.get(event_id)
            return copy.deepcopy(self._events[key]["envelope"]) if key else None

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(e["envelope"]) for e in self._events.values()
                    if e.get("run_id") == run_id]

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._decisions.get(run_id, []))

    def pin_definitions(self, definitions: Sequence[tuple[str, int, str, dict[str, Any]]]
                        ) -> dict[tuple[str, int], str]:
        with self._lock:
            for name, version, fingerprint, document in definitions:
                self._definitions.setdefault((name, version),
                                             (fingerprint, copy.deepcopy(document)))
            return {k: v[0] for k, v in self._definitions.items()}

    def pinned_definition(self, saga: str, version: int) -> dict[str, Any] | None:
        with self._lock:
            pinned = self._definitions.get((saga, version))
            return copy.deepcopy(pinned[1]) if pinned else None

    def close(self) -> None:
        pass
