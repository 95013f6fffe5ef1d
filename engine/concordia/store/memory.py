"""The in-memory store: the reference semantics, used by unit tests and ``concordia.testing``.

Runs with work are indexed as the SQLite store indexes them: running runs in the order
they became runnable, timers in a heap, so finding due runs costs the same with a
thousand stored runs as with a million.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from concordia.status import ACTIVE, CompStatus, Kind, RunStatus, StepStatus
from concordia.store.base import ConflictError, Store
from concordia.store.records import (
    APPLIED,
    CONFLICT,
    DUPLICATE,
    AwaitRecord,
    BufferedEvent,
    Commit,
    HistoryEntry,
    Inbound,
    RunRecord,
    StepRecord,
    copy_run,
    copy_step,
)

MAX_BUFFERED_PER_TYPE = 10_000
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
        self._history: dict[str, list[HistoryEntry]] = {}
        self._running: dict[str, None] = {}  # running runs, in the order they became so
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

    def create_run(self, commit: Commit) -> None:
        with self._lock:
            if commit.run.id in self._runs:
                raise ConflictError(commit.run.id)
            self._apply(commit, 1)

    def commit(self, commit: Commit) -> None:
        with self._lock:
            current = self._runs.get(commit.run.id)
            if current is None or (commit.expect_rev is not None
                                   and current.rev != commit.expect_rev):
                raise ConflictError(commit.run.id)
            if commit.awaits_add:
                seen = set(commit.buffered_seen)
                if any(b.event_id not in seen for a in commit.awaits_add
                       for b in self.find_buffered(a.event_type, a.key,
                                                   commit.run.updated_at)):
                    raise ConflictError(commit.run.id)  # an early event it has not seen
            if current.cancel_reason is not None:  # a cancellation asked for meanwhile
                commit.run.cancel_reason = current.cancel_reason
            self._apply(commit, current.rev + 1)

    def _apply(self, c: Commit, rev: int) -> None:
        c.run.rev = rev
        run = copy_run(c.run)
        self._runs[run.id] = run
        self._index(run)
        steps = self._steps.setdefault(run.id, {})
        for s in c.steps:
            steps[s.name] = copy_step(s)
        self._history.setdefault(run.id, []).extend(c.history)
        if not c.plain:
            self._apply_rest(c, run)

    def _apply_rest(self, c: Commit, run: RunRecord) -> None:
        """What a commit adds besides the run and its steps (most commits add none)."""
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
        if c.wake:
            self._wake(c.wake, c.run.updated_at)

    def _wake(self, wake: list[tuple[str, str]], at: float) -> None:
        """Make each parent's waiting step due and the parent runnable (see Commit.wake)."""
        for run_id, step in wake:
            run = self._runs.get(run_id)
            if run is None or run.status not in ACTIVE:
                continue
            rec = self._steps.get(run_id, {}).get(step)
            if rec is not None and (rec.status == StepStatus.AWAITING
                                    or rec.comp_status == CompStatus.AWAITING):
                rec.wake_at = at
            run.rev += 1
            run.status, run.wake_at = RunStatus.RUNNING, None
            self._index(run)

    def _index(self, run: RunRecord) -> None:
        """Keep the due-run indexes in step with ``run``'s status and wake time."""
        if run.status == RunStatus.RUNNING:
            self._running.setdefault(run.id, None)
        else:
            self._running.pop(run.id, None)
            if run.status in _TIMED and run.wake_at is not None:
                heapq.heappush(self._timers, (run.wake_at, next(self._seq), run.id))

    def _timer_valid(self, wake_at: float, run_id: str) -> bool:
        run = self._runs.get(run_id)
        return run is not None and run.status in _TIMED and run.wake_at == wake_at

    def save_checkpoint(self, run_id: str, step: str, attempt: int, owner: str, data: Any,
                        at: float) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            rec = self._steps.get(run_id, {}).get(step)
            if (run is None or rec is None or rec.attempt != attempt
                    or rec.status != StepStatus.RUNNING or run.leased_to_other(owner, at)):
                return False
            rec.checkpoint = copy.deepcopy(data)
            self._history[run_id].append(HistoryEntry(run_id, at, Kind.STEP_CHECKPOINT, step,
                                                      attempt, {"data": data}))
            return True

    def request_cancel(self, run_id: str, reason: str, at: float) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            if run.status in ACTIVE and run.cancel_reason is None:
                run.cancel_reason = reason
                self._history[run_id].append(HistoryEntry(
                    run_id, at, Kind.RUN_CANCEL_REQUESTED, None, None, {"reason": reason}))
                if not run.leased_to_other("", at):
                    run.status, run.wake_at = RunStatus.RUNNING, None
                    run.rev += 1
                    self._index(run)
            return copy_run(run)

    def park(self, run_id: str, owner: str, error: str, at: float) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status not in ACTIVE or run.leased_to_other(owner, at):
                return
            run.status, run.error, run.wake_at = RunStatus.STUCK, error, None
            run.lease_owner = run.lease_expires = None
            run.rev += 1
            run.updated_at = at
            self._index(run)
            self._history[run_id].append(HistoryEntry(run_id, at, Kind.RUN_STUCK, None, None,
                                                      {"error": error}))

    def renew_leases(self, owner: str, run_ids: Sequence[str], expires: float) -> list[str]:
        with self._lock:
            kept = []
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.lease_owner == owner:
                    run.lease_expires = expires
                    kept.append(run_id)
            return kept

    def release_leases(self, owner: str, run_ids: Sequence[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.lease_owner == owner:
                    run.lease_owner = run.lease_expires = None

    def release_owner(self, owner: str) -> list[str]:
        with self._lock:
            held = [r for r in self._running if self._runs[r].lease_owner == owner]
            for run_id in held:
                run = self._runs[run_id]
                run.lease_owner = run.lease_expires = None
            return held

    def write_batch(self, fns: Sequence[Callable[[Store], Any]]
                    ) -> list[tuple[Any, BaseException | None]]:
        out: list[tuple[Any, BaseException | None]] = []
        for fn in fns:
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

    def load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]] | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            return copy_run(run), {k: copy_step(v) for k, v in self._steps[run_id].items()}

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._lock:
            return {k: copy_step(v) for k, v in self._steps.get(run_id, {}).items()}

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
                  before: str | None, limit: int) -> list[RunRecord]:
        with self._lock:
            ids = list(self._runs)
            if before is not None:
                if before not in self._runs:
                    return []
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
        # Like the SQLite store: running runs first (not those another owner leases),
        # then due timers, earliest first.
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
            for run in map(self._runs.__getitem__, self._running):
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

    def apply_delivery(self, items: Sequence[Inbound]) -> list[str]:
        statuses: list[str] = []
        with self._lock:
            for item in items:
                env = item.envelope
                if (env["source"], env["id"]) in self._inbox:
                    statuses.append(DUPLICATE)
                    continue
                if any(c.run.id in self._runs for c in item.creates) or any(
                        (current := self._runs.get(c.run.id)) is None
                        or (c.expect_rev is not None and current.rev != c.expect_rev)
                        for c in item.resumes):
                    statuses.append(CONFLICT)
                    continue
                seen = set(item.awaits_seen)
                if any((a.run_id, a.step) not in seen for b in item.buffer
                       for a in self.find_awaits(b.event_type, b.key)):
                    statuses.append(CONFLICT)  # an await registered since it was planned
                    continue
                self._record_inbox(env, item.received_at)
                for c in item.resumes:
                    self._apply(c, self._runs[c.run.id].rev + 1)
                for c in item.creates:
                    self._apply(c, 1)
                for event in item.buffer:
                    self._buffer(event)
                statuses.append(APPLIED)
        return statuses

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        with self._lock:
            keys = set(self._await_index.get((event_type, key), set()))
            if key is not None:  # awaits whose match has no indexable key see every event
                keys |= self._await_index.get((event_type, None), set())
            return [self._awaits[k] for k in sorted(keys)]

    def _buffer(self, event: BufferedEvent) -> None:
        same_type = [b for b in self._buffered.values() if b.event_type == event.event_type]
        if len(same_type) >= MAX_BUFFERED_PER_TYPE:
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
