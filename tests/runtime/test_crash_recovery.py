"""Crash recovery on SQLite: a worker killed with SIGKILL at random moments, restarted each
time, must finish every run without losing a result or skipping (or inventing) a
compensation, and a re-executed step must see the same idempotency key.

The worker is ``crash_child.py``; its handlers write every call to a side log (one
``write`` and an ``fsync`` each), which is what really happened, to compare with the store.
"""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from concordia.status import ENDED
from concordia.store.records import StepRecord
from concordia.store.sqlite import SqliteStore
from tests.journal import records_of
from tests.runtime import crash_child
from tests.runtime.crash_child import COMPENSATED, STEPS, expected_status, plan_for, run_id
from tests.runtime.sagas import write_definitions

CHILD = Path(crash_child.__file__)
RUNS = 400
KILLS = 55  # kills that land while the worker is working (some more land during start-up)
MAX_DELAY = 0.05  # seconds of work a worker gets before it is killed


class Worker:
    def __init__(self, tmp: Path, stderr: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp / "runs.db"), str(tmp / "side.log"),
             str(tmp / "definitions"), str(RUNS)],
            stdout=subprocess.PIPE, stderr=stderr, text=True)

    def wait_for(self, word: str, timeout: float) -> bool:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.05)
            if ready:
                line = self.proc.stdout.readline()
                if line.strip() == word:
                    return True
                if not line:  # the worker exited
                    return False
        raise AssertionError(f"worker did not print {word!r} within {timeout}s")

    def kill(self) -> bool:
        """SIGKILL the worker; False if it had already finished on its own."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if code == 0:
            return False
        assert code == -signal.SIGKILL, f"worker crashed on its own (exit {code})"
        return True


def read_side_log(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # strict: a torn line fails the test


def test_worker_killed_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    write_definitions(tmp_path / "definitions", crash_child.saga_document())
    started = time.monotonic()
    kills_working = kills_starting = 0
    with open(tmp_path / "worker.err", "w") as stderr:
        while kills_working < KILLS:
            worker = Worker(tmp_path, stderr)
            if rng.random() < 0.1:  # now and then, kill it while it opens the store
                time.sleep(rng.uniform(0.0, 0.6))
                kills_starting += worker.kill()
                continue
            if not worker.wait_for("ready", timeout=60):
                raise AssertionError(f"worker exited before it was ready (seed {seed})")
            time.sleep(rng.uniform(0.0, MAX_DELAY))
            if not worker.kill():
                break
            kills_working += 1
        # The last worker runs to the end.
        ended_by_kills = count_ended(tmp_path / "runs.db")
        final = Worker(tmp_path, stderr)
        assert final.wait_for("done", timeout=120), f"final worker failed (seed {seed})"
        assert final.proc.wait(timeout=30) == 0
        assert final.proc.stdout is not None
        final.proc.stdout.close()
    elapsed = time.monotonic() - started
    assert kills_working >= 50, (
        f"only {kills_working} kills landed before the work ran out (seed {seed})")

    side = read_side_log(tmp_path / "side.log")
    store = SqliteStore(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        re_executed = check_journal(store, side, seed)
    finally:
        store.close()
    print(f"{kills_working} kills while working, {kills_starting} during start-up; "
          f"{ended_by_kills}/{RUNS} runs ended before the last worker; {re_executed} handler "
          f"calls re-executed; {elapsed:.1f}s; seed {seed}")


def count_ended(db: Path) -> int:
    store = SqliteStore(f"sqlite:///{db}")
    try:
        return sum(len(store.list_runs(status=s, limit=10 * RUNS)) for s in ENDED)
    finally:
        store.close()


def check_journal(store: SqliteStore, side: list[dict[str, Any]], seed: int) -> int:
    """Compare the journal with the side log; return how many handler calls re-ran."""
    note = f"(seed {seed})"
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in side:
        by_run[entry["run"]].append(entry)
    runs = {r.id: r for r in store.list_runs(limit=10 * RUNS)}
    assert sorted(runs) == [run_id(i) for i in range(RUNS)], note

    re_executed = 0
    statuses: Counter[str] = Counter()
    for i in range(RUNS):
        rid = run_id(i)
        plan = plan_for(i)
        run = runs[rid]
        steps = records_of(store, rid)
        history = store.history(rid)
        log = by_run[rid]
        statuses[run.status] += 1

        # -- every run reached the one terminal state its plan leads to -------------------
        assert run.status in ENDED, f"{rid} left {run.status} {note}"
        assert run.status == expected_status(plan), f"{rid} {plan} {note}"
        ends = [h.kind for h in history if h.kind in {f"run.{s}" for s in ENDED}]
        assert ends == [f"run.{run.status}"], f"{rid}: {ends} {note}"

        calls = [e for e in log if e["event"] == "call"]
        # -- idempotency keys: one per step (and one per compensation), on every call -----
        for e in calls:
            suffix = ":compensate" if e["phase"] == "compensation" else ""
            assert e["key"] == f"{rid}:{e['step']}{suffix}", f"{e} {note}"
        per_attempt = Counter((e["phase"], e["step"], e["attempt"]) for e in calls)
        re_executed += sum(n - 1 for n in per_attempt.values())

        # -- "started" is durable before the handler runs: never more calls than starts ---
        starts = Counter(
            ("action" if h.kind == "step.started" else "compensation", h.step, h.attempt)
            for h in history if h.kind in ("step.started", "compensation.started"))
        for key, n in per_attempt.items():
            assert n <= starts[key], f"{rid} {key}: {n} calls, {starts[key]} starts {note}"

        returned = {e["step"]: e["result"] for e in log if e["event"] == "returned"}
        checkpointed = {e["step"]: e["data"] for e in log if e["event"] == "checkpointed"}
        action_called = {e["step"] for e in calls if e["phase"] == "action"}
        for name in STEPS:
            rec = steps.get(name) or StepRecord(name)  # untouched: pending
            # -- no result lost: what a handler returned is journaled, once ---------------
            successes = [h for h in history if h.kind == "step.succeeded" and h.step == name]
            if name in returned:
                assert rec.status == "succeeded", f"{rid}/{name}: {rec.status} {note}"
                assert rec.result == returned[name], f"{rid}/{name} {note}"
                assert [h.detail["result"] for h in successes] == [returned[name]], note
            else:
                assert rec.status != "succeeded", f"{rid}/{name}: result from nowhere {note}"
                assert successes == [], note
            if name in checkpointed:
                assert rec.checkpoint == checkpointed[name], f"{rid}/{name} {note}"
            # -- compensations: exactly for the steps that did something and can be undone
            comp_calls = [e for e in calls if e["phase"] == "compensation" and e["step"] == name]
            comp_done = [e for e in log if e["event"] == "compensated" and e["step"] == name]
            had_effect = name in returned or name in checkpointed
            if comp_calls:
                assert name in action_called, f"{rid}/{name}: undo of a step never started"
                assert had_effect, f"{rid}/{name}: undo of a step that did nothing {note}"
                first_action = next(k for k, e in enumerate(log)
                                    if e["step"] == name and e["phase"] == "action")
                assert log.index(comp_calls[0]) > first_action, note
                for e in comp_calls:  # each undo got the journaled result, or the checkpoint
                    if e["completed"]:
                        assert e["result"] == returned[name], f"{rid}/{name} {note}"
                    else:
                        assert e["result"] == checkpointed[name], f"{rid}/{name} {note}"
            if run.status == "compensated" and had_effect and name in COMPENSATED:
                assert comp_done, f"{rid}/{name}: compensation skipped {note}"
                assert rec.comp_status == "succeeded", f"{rid}/{name} {note}"
            else:
                assert comp_calls == [], f"{rid}/{name}: unexpected undo {note}"
                assert rec.comp_status is None, note

    # The kills did interrupt handlers mid-flight, and every path was exercised.
    assert re_executed > 0, f"no step was ever re-executed after a kill {note}"
    assert set(statuses) == {"completed", "compensated", "failed"}, statuses
    return re_executed


if not hasattr(signal, "SIGKILL"):  # pragma: no cover - POSIX only
    pytestmark = pytest.mark.skip("needs SIGKILL")
