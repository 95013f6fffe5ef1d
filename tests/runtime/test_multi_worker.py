"""Four ``concordia worker`` processes on one SQLite file share 300 runs without ever running
one attempt of a step twice at the same time, and leave every run where its plan leads.

The runs (a 3-step saga: success, a failure for good at each step, a transient failure
that a retry absorbs) are created beforehand by an engine that does not claim them. Each
handler call takes 0.1 s and writes a ``begin`` and an ``end`` line to a side log
(:mod:`tests.runtime.fleet`); the side log is what really ran, compared with the journal.

- Undisturbed, every (idempotency key, attempt, phase) runs exactly once: no overlap, no
  duplicate; every run ends as planned, completed runs hold every step's result, and each
  compensation ran once per key; no worker finds a lease lost while it runs a call.
- With a worker SIGKILLed every 300-800 ms (and restarted), an attempt may run again
  (at-least-once) only if the worker running it was killed while it ran, and never while
  an earlier execution of the same attempt is still alive.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.runtime.engine import Engine
from concordia.status import ENDED, Kind
from concordia.store.sqlite import SqliteStore
from tests.runtime import fleet
from tests.runtime.sagas import write_definitions
from tests.runtime.workers import (
    WorkerProcess,
    read_side_log,
    stop_all,
    wait_until,
)

RUNS = 300
CONCURRENCY = (2, 3, 4, 3)  # one worker process each
LEASE_TTL = 1.0
KILLS = 12  # SIGKILLs the controller sends (at least MIN_KILLS must land on work)
MIN_KILLS = 8
FINISH_WITHIN = 100.0  # seconds for every run to end


@dataclass(frozen=True)
class Execution:
    """One handler call as the side log saw it; ``end`` is None if it never returned."""

    pid: int
    run: str
    step: str
    phase: str
    key: str
    attempt: int
    start: float
    end: float | None

    @property
    def what(self) -> tuple[str, int, str]:
        """The unit that must never run twice at once: (idempotency key, attempt, phase)."""
        return (self.key, self.attempt, self.phase)


def executions(side: list[dict[str, Any]]) -> list[Execution]:
    """Pair each ``begin`` line with its ``end`` line (same process, call and start)."""
    ends = {(e["pid"], e["key"], e["attempt"], e["phase"], e["start"]): e["end"]
            for e in side if e["ev"] == "end"}
    begins = [e for e in side if e["ev"] == "begin"]
    assert len(ends) == len(side) - len(begins), "an end line without its begin line"
    return [Execution(e["pid"], e["run"], e["step"], e["phase"], e["key"], e["attempt"],
                      e["start"], ends.get((e["pid"], e["key"], e["attempt"], e["phase"],
                                            e["start"])))
            for e in begins]


def overlaps(calls: list[Execution], died: dict[int, float]
             ) -> list[tuple[Execution, Execution]]:
    """Pairs of executions of the same attempt alive at the same time.

    An execution is alive from its start to its end or, if it never returned, to its
    process's death (forever if its process did not die: it may still be running).
    """
    by_what: dict[tuple[str, int, str], list[Execution]] = defaultdict(list)
    for call in calls:
        by_what[call.what].append(call)
    found = []
    for group in by_what.values():
        group.sort(key=lambda c: c.start)
        for earlier, later in itertools.pairwise(group):
            alive_until = earlier.end if earlier.end is not None else died.get(
                earlier.pid, float("inf"))
            if later.start < alive_until:
                found.append((earlier, later))
    return found


def leases_lost(workers: list[WorkerProcess]) -> list[tuple[int, str, float]]:
    """(worker pid, run, when) of each ``lease.lost`` a worker logged."""
    found = []
    for worker in workers:
        for line in worker.stderr().splitlines():
            if '"lease.lost"' in line:
                entry = json.loads(line)
                when = datetime.fromisoformat(entry["timestamp"]).timestamp()
                found.append((worker.pid, entry["run_id"], when))
    return found


def lost_mid_call(lost: list[tuple[int, str, float]], calls: list[Execution]
                  ) -> list[tuple[int, str, float]]:
    """The losses a worker found while running a call of that run: its renewals did not
    keep up. (A worker that loses the race for a due run to another worker may find the
    other's lease before its own commit is refused; it has called nothing then.)"""
    return [(pid, run, when) for pid, run, when in lost
            if any(c.pid == pid and c.run == run and c.start <= when
                   and (c.end is None or when <= c.end) for c in calls)]


def create_runs(tmp_path: Path) -> tuple[str, Path]:
    """The definitions and the store with RUNS runs, none of them claimed."""
    definitions = tmp_path / "definitions"
    write_definitions(definitions, fleet.saga_document())
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    # claim_new_runs=False: the runs are free for the workers at once (a claiming engine
    # would lease them to itself for lease_ttl).
    with Engine(Catalog.load_strict([str(definitions)]), fleet.registry, store,
                clock=SystemClock(), claim_new_runs=False) as engine:
        for i in range(RUNS):
            engine.start(fleet.SAGA_NAME, {"plan": fleet.plan_for(i)}, run_id=fleet.run_id(i))
    return store, definitions


def ended_count(store: str) -> int:
    reader = SqliteStore(store, readonly=True)
    try:
        return sum(r.status in ENDED for r in reader.list_runs(limit=2 * RUNS))
    finally:
        reader.close()


def start_worker(store: str, definitions: Path, tmp_path: Path, slot: int,
                 generation: int = 0) -> WorkerProcess:
    return WorkerProcess(store, "tests.runtime.fleet", definitions, tmp_path,
                         concurrency=CONCURRENCY[slot], lease_ttl=LEASE_TTL,
                         env={"FLEET_SIDE_LOG": str(tmp_path / "side.log")},
                         name=f"worker-{slot}-{generation}")


def check_journal(store: str, definitions: Path, calls: list[Execution], *,
                  exactly_once: bool) -> None:
    """Every run ended as planned, with what its handlers returned; compensations once
    per key (at least once when ``exactly_once`` is False: a killed worker's call re-runs)."""
    by_run: dict[str, list[Execution]] = defaultdict(list)
    for call in calls:
        by_run[call.run].append(call)
    with Engine(Catalog.load_strict([str(definitions)]), fleet.registry,
                SqliteStore(store, readonly=True), check_bindings=False) as reader:
        for i in range(RUNS):
            rid, plan = fleet.run_id(i), fleet.plan_for(i)
            view = reader.get_run(rid)
            assert view.status == fleet.expected_status(plan), (rid, plan, view.error)
            ends = [h.kind for h in view.history if h.kind.startswith("run.")
                    and h.kind not in (Kind.RUN_STARTED, Kind.RUN_RETRIED)]
            assert ends == [f"run.{view.status}"], (rid, ends)
            if view.status == "completed":
                assert view.results == {s: fleet.result_of(rid, s) for s in fleet.STEPS}, rid
            undone = fleet.expected_compensations(plan)
            assert view.compensated_steps() == undone, (rid, plan)
            mine = by_run[rid]
            comps = Counter(c.key for c in mine if c.phase == "compensation")
            assert set(comps) == {f"{rid}:{s}:compensate" for s in undone}, (rid, comps)
            actions = Counter((c.step, c.attempt) for c in mine if c.phase == "action")
            assert set(actions) == expected_attempts(plan), (rid, plan, actions)
            if exactly_once:
                assert set(comps.values()) <= {1}, (rid, comps)
                assert set(actions.values()) == {1}, (rid, actions)


def expected_attempts(plan: str) -> set[tuple[str, int]]:
    """The (step, attempt) pairs the actions of a run of ``plan`` run."""
    last = fleet.STEPS.index(plan[5:]) if plan.startswith("fail:") else len(fleet.STEPS) - 1
    attempts = {(s, 1) for s in fleet.STEPS[:last + 1]}
    if plan == "flaky:charge":
        attempts.add(("charge", 2))
    return attempts


def test_the_overlap_check_sees_one_attempt_alive_twice_at_once() -> None:
    a = Execution(1, "r", "s", "action", "r:s", 1, 10.0, 10.1)
    early = replace(a, pid=2, start=10.05, end=10.2)  # starts before ``a`` returned
    after = replace(a, pid=2, start=10.1, end=10.2)  # starts as ``a`` returns
    assert overlaps([early, a], {}) == [(a, early)]
    assert overlaps([a, after], {}) == []
    assert overlaps([a, replace(early, attempt=2)], {}) == []  # another attempt
    assert overlaps([a, replace(early, phase="compensation")], {}) == []
    cut = replace(a, end=None)  # never returned: alive until its process died
    later = replace(after, start=10.6)
    assert overlaps([cut, after], {1: 10.5}) == [(cut, after)]
    assert overlaps([cut, later], {1: 10.5}) == []
    assert overlaps([cut, later], {}) == [(cut, later)]  # its process never died


def test_the_lease_check_sees_a_lease_lost_mid_call() -> None:
    a = Execution(1, "r", "s", "action", "r:s", 1, 10.0, 10.1)
    assert lost_mid_call([(1, "r", 10.05)], [a]) == [(1, "r", 10.05)]
    assert lost_mid_call([(1, "r", 10.05)], [replace(a, end=None)]) == [(1, "r", 10.05)]
    assert lost_mid_call([(2, "r", 10.05)], [a]) == []  # another worker's report
    assert lost_mid_call([(1, "q", 10.05)], [a]) == []  # another run
    assert lost_mid_call([(1, "r", 10.2)], [a]) == []  # after the call


@pytest.mark.slow
def test_four_workers_share_the_runs_and_never_run_an_attempt_twice(tmp_path: Path) -> None:
    store, definitions = create_runs(tmp_path)
    began = time.monotonic()
    workers = [start_worker(store, definitions, tmp_path, slot)
               for slot in range(len(CONCURRENCY))]
    try:
        wait_until(lambda: ended_count(store) == RUNS or not all(w.alive() for w in workers),
                   FINISH_WITHIN, "every run ending", interval=0.2)
        took = time.monotonic() - began
        for worker in workers:  # none died on the way, and each stops cleanly on SIGTERM
            assert worker.alive(), worker.stderr()
            assert worker.terminate() == 0, worker.stderr()
    finally:
        stop_all(workers)
    calls = executions(read_side_log(tmp_path / "side.log"))
    # No worker's renewals fell behind while it ran a call.
    lost = leases_lost(workers)
    assert lost_mid_call(lost, calls) == []
    assert [c for c in calls if c.end is None] == []
    assert overlaps(calls, {}) == []
    duplicates = {w: n for w, n in Counter(c.what for c in calls).items() if n > 1}
    assert duplicates == {}
    check_journal(store, definitions, calls, exactly_once=True)
    per_worker = Counter(c.pid for c in calls)
    # Every worker took part: the runs really were shared.
    assert set(per_worker) == {w.pid for w in workers}, per_worker
    print(f"\n{RUNS} runs, {len(calls)} handler calls by {len(per_worker)} workers "
          f"({sorted(per_worker.values())}), 0 duplicates, 0 overlaps, {len(lost)} leases "
          f"reported lost (none mid-call), {took:.1f}s")


@pytest.mark.slow
def test_workers_killed_at_random_rerun_only_the_attempts_they_were_running(
        tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    note = f"(seed {seed})"
    store, definitions = create_runs(tmp_path)
    began = time.monotonic()
    slots = [start_worker(store, definitions, tmp_path, slot)
             for slot in range(len(CONCURRENCY))]
    every = list(slots)
    killed: list[WorkerProcess] = []
    try:
        while len(killed) < KILLS:
            time.sleep(rng.uniform(0.3, 0.8))
            if ended_count(store) == RUNS:
                break
            slot = rng.randrange(len(slots))
            victim = slots[slot]
            assert victim.alive(), f"worker {victim.pid} died on its own {note}"
            assert victim.kill() < 0
            killed.append(victim)
            slots[slot] = start_worker(store, definitions, tmp_path, slot, len(killed))
            every.append(slots[slot])
        wait_until(lambda: ended_count(store) == RUNS or not all(w.alive() for w in slots),
                   FINISH_WITHIN, f"every run ending {note}", interval=0.2)
        took = time.monotonic() - began
        for worker in slots:
            assert worker.alive(), worker.stderr()
            assert worker.terminate() == 0, worker.stderr()
    finally:
        stop_all(every)
    assert len(killed) >= MIN_KILLS, f"only {len(killed)} kills landed on work {note}"

    died = {w.pid: w.died_at for w in killed if w.died_at is not None}
    calls = executions(read_side_log(tmp_path / "side.log"))
    # A call that never returned was cut short by a kill, in the process killed.
    cut = [c for c in calls if c.end is None]
    assert all(c.pid in died and c.start <= died[c.pid] for c in cut), note
    assert overlaps(calls, died) == [], note
    by_what: dict[tuple[str, int, str], list[Execution]] = defaultdict(list)
    for call in calls:
        by_what[call.what].append(call)
    reruns = 0
    for group in by_what.values():
        group.sort(key=lambda c: c.start)
        # Every execution but the last was in a worker killed while it ran (before the
        # engine could journal its outcome).
        for earlier in group[:-1]:
            assert earlier.pid in died, (group, note)
            assert earlier.start <= died[earlier.pid], (group, note)
        reruns += len(group) - 1
    check_journal(store, definitions, calls, exactly_once=False)
    assert cut, f"no kill interrupted a handler call {note}"
    lost = leases_lost(every)
    assert lost_mid_call(lost, calls) == [], note
    print(f"\n{RUNS} runs, {len(calls)} handler calls, {len(killed)} kills, {len(cut)} calls "
          f"cut short, {reruns} attempts re-run, 0 overlaps, {len(lost)} leases reported lost "
          f"(none mid-call), {took:.1f}s {note}")
