"""The in-memory store: the reference semantics, used by unit tests and ``concordia.testing``."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from concordia.store.base import ConflictError
from concordia.store.records import (
    ACTIVE,
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


class MemoryStore:
    """Everything in dicts, guarded by one lock; records are copied in and out."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.readonly = False
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        self._awaits: dict[tuple[str, str], AwaitRecord] = {}
        self._await_index: dict[tuple[str, str | None], set[tuple[str, str]]] = {}
        self._buffered: dict[str, BufferedEvent] = {}
        self._events: dict[str, dict[str, Any]] = {}  # id -> {"envelope", "persistent", ...}
        self._outbox: list[tuple[int, str]] = []  # (seq, event id) not yet published
        self._seq = 0
        self._inbox: set[str] = set()
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
            seen = set(commit.buffered_seen)
            if any(b.event_id not in seen for a in commit.awaits_add
                   for b in self.find_buffered(a.event_type, a.key, commit.run.updated_at)):
                raise ConflictError(commit.run.id)  # an early event it has not looked at
            self._apply(commit, current.rev + 1)

    def _apply(self, c: Commit, rev: int) -> None:
        c.run.rev = rev
        run = copy_run(c.run)
        self._runs[run.id] = run
        steps = self._steps.setdefault(run.id, {})
        for s in c.steps:
            steps[s.name] = copy_step(s)
        self._history.setdefault(run.id, []).extend(c.history)
        for e in c.events:
            env = e["envelope"]
            self._events[env["id"]] = {**e, "run_id": run.id, "direction": "out"}
            if e["persistent"]:
                self._seq += 1
                self._outbox.append((self._seq, env["id"]))
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

    def save_checkpoint(self, run_id: str, step: str, data: Any, at: float) -> None:
        with self._lock:
            rec = self._steps[run_id][step]
            rec.checkpoint = copy.deepcopy(data)
            self._history[run_id].append(HistoryEntry(run_id, at, "step.checkpoint", step,
                                                      rec.attempt, {"data": data}))

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return copy_run(run) if run else None

    def load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]] | None:
        with self._lock:
            run = self.get_run(run_id)
            return None if run is None else (run, self.get_steps(run_id))

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
            runs = [r for r in self._runs.values()
                    if (status is None or r.status == status) and (saga is None or r.saga == saga)]
            return [copy_run(r) for r in runs[:limit]]

    def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        with self._lock:
            return sorted(r for r in self._runs if r.startswith(prefix))[:limit]

    def due_runs(self, now: float, limit: int) -> list[str]:
        # Like the SQLite store: running runs first, then due timers, earliest first; ties
        # in the order the runs were recorded (the sorts are stable).
        with self._lock:
            running = [r for r in self._runs.values() if r.status == "running"]
            running.sort(key=lambda r: (r.wake_at is not None, r.wake_at or 0.0))
            timed = [r for r in self._runs.values() if r.status in ("waiting", "suspended")
                     and r.wake_at is not None and r.wake_at <= now]
            timed.sort(key=lambda r: r.wake_at or 0.0)
            return [r.id for r in running + timed][:limit]

    def next_wake_at(self) -> float | None:
        with self._lock:
            times = [r.wake_at for r in self._runs.values()
                     if r.status in ACTIVE and r.wake_at is not None]
            return min(times) if times else None

    # -- events ------------------------------------------------------------------------------

    def record_inbox(self, envelope: dict[str, Any], at: float) -> bool:
        with self._lock:
            if envelope["id"] in self._inbox:
                return False
            self._inbox.add(envelope["id"])
            self._events.setdefault(envelope["id"], {"envelope": copy.deepcopy(envelope),
                                                     "persistent": True, "run_id": None,
                                                     "direction": "in"})
            return True

    def apply_delivery(self, items: Sequence[Inbound]) -> list[str]:
        statuses: list[str] = []
        with self._lock:
            for item in items:
                if item.envelope["id"] in self._inbox:
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
                self.record_inbox(item.envelope, item.received_at)
                for c in item.resumes:
                    self._apply(c, self._runs[c.run.id].rev + 1)
                for c in item.creates:
                    self._apply(c, 1)
                for event in item.buffer:
                    self.buffer_event(event)
                statuses.append(APPLIED)
        return statuses

    def find_awaits(self, event_type: str, key: str | None) -> list[AwaitRecord]:
        with self._lock:
            keys = set(self._await_index.get((event_type, key), set()))
            if key is not None:  # awaits whose match has no indexable key see every event
                keys |= self._await_index.get((event_type, None), set())
            return [self._awaits[k] for k in sorted(keys)]

    def buffer_event(self, event: BufferedEvent) -> None:
        with self._lock:
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
            return [(seq, copy.deepcopy(self._events[eid]["envelope"]))
                    for seq, eid in self._outbox[:limit]]

    def mark_published(self, ids: Sequence[int], at: float) -> None:
        with self._lock:
            done = set(ids)
            self._outbox = [(s, e) for s, e in self._outbox if s not in done]

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            e = self._events.get(event_id)
            return copy.deepcopy(e["envelope"]) if e else None

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
