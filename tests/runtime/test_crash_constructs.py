"""Crash recovery mid fan-out and mid child saga, on SQLite: a worker killed with SIGKILL at
random moments, restarted each time, must finish every run with no item lost and none
compensated twice, one child run per parent, and each completed child reverted exactly
once when its parent compensates.

The worker is ``crash_constructs_child.py``; its handlers write every call to a side log
(one ``write`` and an ``fsync`` each), which is what really happened.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from concordia.runtime.kinds.children import child_run_id
from concordia.status import ENDED
from concordia.store.sqlite import SqliteStore
from tests.journal import records_of
from tests.runtime import crash_constructs_child as child
from tests.runtime.sagas import write_definitions
from tests.runtime.test_crash_recovery import Worker, read_side_log

pytestmark = pytest.mark.slow

RUNS = 60
KILLS = 25
MAX_DELAY = 0.08  # seconds of work a worker gets before it is killed


class ConstructsWorker(Worker):
    def __init__(self, tmp: Path, stderr: Any) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(child.__file__)), str(tmp / "runs.db"),
             str(tmp / "side.log"), str(tmp / "definitions"), str(RUNS)],
            stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_kills_mid_fan_out_and_mid_child_saga_lose_nothing(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    write_definitions(tmp_path / "definitions", *child.definitions())
    kills = 0
    started = time.monotonic()
    with open(tmp_path / "worker.err", "w") as stderr:
        while kills < KILLS:
            worker = ConstructsWorker(tmp_path, stderr)
            if not worker.wait_for("ready", timeout=60):
                raise AssertionError(f"worker exited before it was ready (seed {seed})")
            time.sleep(rng.uniform(0.0, MAX_DELAY))
            if not worker.kill():
                break
            kills += 1
        final = ConstructsWorker(tmp_path, stderr)
        assert final.wait_for("done", timeout=180), f"final worker failed (seed {seed})"
        assert final.proc.wait(timeout=30) == 0
        assert final.proc.stdout is not None
        final.proc.stdout.close()
    assert kills >= KILLS // 2, f"only {kills} kills landed (seed {seed})"
    side = read_side_log(tmp_path / "side.log")
    store = SqliteStore(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        re_executed = check(store, side, seed)
    finally:
        store.close()
    assert re_executed > 0, f"no handler was ever interrupted by a kill (seed {seed})"
    print(f"{kills} kills; {re_executed} handler calls re-executed; "
          f"{time.monotonic() - started:.1f}s; seed {seed}")


def check(store: SqliteStore, side: list[dict[str, Any]], seed: int) -> int:
    note = f"(seed {seed})"
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in side:
        by_run[entry["own"]].append(entry)
    runs = {r.id: r for r in store.list_runs(limit=10 * RUNS)}
    parents = [child.run_id(i) for i in range(RUNS)]
    kids = {child_run_id(p, "kid"): p for i, p in enumerate(parents)
            if child.plan_for(i)["kind"] != 1}
    # One run per parent and exactly one child for each parent that reached its child step.
    assert sorted(runs) == sorted(parents + list(kids)), note
    re_executed = 0
    for i, rid in enumerate(parents):
        plan = child.plan_for(i)
        run = runs[rid]
        assert run.status == child.expected_status(plan), f"{rid} {plan} {run.error} {note}"
        re_executed += check_run(store, rid, by_run[rid], note)
        kid = child_run_id(rid, "kid")
        if kid in runs:
            want = {0: "completed", 2: "cancelled", 3: "compensated"}[plan["kind"]]
            assert runs[kid].status == want, f"{kid} {note}"
            assert (runs[kid].parent_run_id, runs[kid].parent_step) == (rid, "kid")
            re_executed += check_run(store, kid, by_run[kid], note)
            reverts = [h for h in store.history(kid) if h.kind == "run.revert_requested"]
            assert len(reverts) == (plan["kind"] == 2), f"{kid} {note}"
    assert all(r.status in ENDED for r in runs.values())
    return re_executed


def check_run(store: SqliteStore, rid: str, log: list[dict[str, Any]], note: str) -> int:
    """One run's journal against its side log; returns how many calls re-ran."""
    history = store.history(rid)
    steps = records_of(store, rid)
    run = store.get_run(rid)
    assert run is not None
    calls = [e for e in log if e["event"] == "call"]

    def target(e: dict[str, Any]) -> str:
        return e["step"] if e["index"] is None else f"{e['step']}[{e['index']}]"

    # "Started" is durable before a handler runs: never more calls than starts.
    starts = Counter(("action" if h.kind == "step.started" else "compensation", h.step,
                      h.attempt) for h in history
                     if h.kind in ("step.started", "compensation.started"))
    per_attempt = Counter((e["phase"], target(e), e["attempt"]) for e in calls)
    for key, n in per_attempt.items():
        assert n <= starts[key], f"{rid} {key}: {n} calls, {starts[key]} starts {note}"
    # No result lost: what a handler returned is the journaled result.
    returned = {target(e): e["result"] for e in log if e["event"] == "returned"}
    checkpointed = {target(e) for e in log if e["event"] == "checkpointed"}
    for name, result in returned.items():
        assert steps[name].status == "succeeded", f"{rid}/{name} {note}"
        assert steps[name].result == result, f"{rid}/{name} {note}"
    # Idempotency keys: one per item, the same on every call.
    for e in calls:
        want = (f"{rid}:{e['step']}" if e["index"] is None
                else f"{rid}:{e['step']}:{e['index']}")
        if e["phase"] == "compensation":
            want += ":compensate"
        assert e["key"] == want, f"{e} {note}"
    # Compensated exactly once in the journal: each step or item that had an effect, and
    # nothing else; the fan-out's items last first.
    undone = [h.step for h in history if h.kind == "compensation.succeeded"]
    assert len(undone) == len(set(undone)), f"{rid}: undone twice {undone} {note}"
    if run.status == "completed":
        assert undone == [], note
    else:
        with_effect = set(returned) | checkpointed
        handlers = {n for n in with_effect if n != "kid"}
        assert {u for u in undone if u != "kid"} == handlers, f"{rid} {undone} {note}"
        items = [u for u in undone if u.startswith("fan[")]
        assert items == sorted(items, reverse=True), f"{rid} {items} {note}"
    # A compensation handler ran only after its journaled start, at most once per start.
    done = Counter(target(e) for e in log if e["event"] == "compensated")
    comp_starts = Counter(h.step for h in history if h.kind == "compensation.started")
    for name, n in done.items():
        assert n <= comp_starts[name], f"{rid}/{name} {note}"
    return sum(n - 1 for n in per_attempt.values())
