"""Engine throughput against its floors, measured in one process run.

    .venv/bin/python bench/engine.py [--runs N] [--sqlite-runs N] [--repeat K]

A 5-step saga, run sequentially (start, then drive to the end), where every fifth run
fails for good at step 4, so steps 3, 2 and 1 are compensated. A "step" is one handler
call, action or compensation: 5 for a completed run, 4 + 3 for a failed one (5.4 on
average).

Configurations:
- ``memory``: the engine on the in-memory store. Its floor is the same handlers called as
  plain functions in the same order (with the same exception for the failing step);
  the engine's overhead per step is (engine time - plain time) / steps.
- ``sqlite``: the engine on the SQLite store (WAL, ``synchronous=FULL``). Its floor is a
  raw sqlite3 journal with the same settings that commits once per step (one row with
  the step's JSON result), calling the same handlers. As a diagnostic, the same journal
  also committing each run's start (N+1 commits for N steps, as the engine must, so that
  a run exists durably before its first side effect) gives a second ratio.

Each figure is the best of ``--repeat`` timed passes after a warm-up. The table comes
first, then one JSON object per line per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "engine") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "engine"))

from concordia.clock import SystemClock  # noqa: E402
from concordia.definitions.catalog import Catalog  # noqa: E402
from concordia.errors import PermanentError  # noqa: E402
from concordia.registry import Registry  # noqa: E402
from concordia.runtime.engine import Engine  # noqa: E402
from concordia.store.base import Store  # noqa: E402
from concordia.store.sqlite import SqliteStore  # noqa: E402

STEPS = ("reserve", "authorise", "charge", "pack", "ship")
FAILING_STEP = 3  # step 4
FAIL_EVERY = 5  # 20% of runs
MEMORY_TARGET_US = 50.0
SQLITE_TARGET_RATIO = 0.70
WARM_UP = 20

SAGA_YAML = "name: bench\nversion: 1\nsteps:\n" + "".join(
    f"  - name: {name}\n    action: bench.{name}\n    compensate: bench.undo_{name}\n"
    for name in STEPS)


def fails(i: int) -> bool:
    return i % FAIL_EVERY == FAIL_EVERY - 1


def steps_of(runs: int) -> int:
    failed = sum(fails(i) for i in range(runs))
    return (runs - failed) * len(STEPS) + failed * (2 * FAILING_STEP + 1)


# -- the handlers (shared by every configuration) ------------------------------------------------


def make_action(name: str) -> Callable[[Any], Any]:
    def action(ctx: Any) -> Any:
        if name == STEPS[FAILING_STEP] and ctx.input["fail"]:
            raise PermanentError(f"{name} refused")
        return {"step": name, "ref": ctx.idempotency_key}
    return action


def make_compensation(name: str) -> Callable[[Any], Any]:
    def compensation(ctx: Any) -> Any:
        return None
    return compensation


ACTIONS = {name: make_action(name) for name in STEPS}
COMPENSATIONS = {name: make_compensation(name) for name in STEPS}


def registry() -> Registry:
    reg = Registry()
    for name in STEPS:
        reg.add_action(f"bench.{name}", ACTIONS[name])
        reg.add_compensation(f"bench.undo_{name}", COMPENSATIONS[name])
    return reg


@dataclass
class PlainCtx:
    """What a plain call hands the handler: the fields the handlers read."""

    input: dict[str, Any]
    idempotency_key: str
    result: Any = None


# -- the configurations ---------------------------------------------------------------------------


def run_plain(runs: int, journal: Callable[[str, str, str, Any], None] | None = None, *,
              create: bool = False) -> int:
    """The saga's handlers as plain calls (optionally journaling each step, and with
    ``create`` also each run's start, as a commit of its own); return steps."""
    steps = 0
    for i in range(runs):
        run_id = f"r{i}"
        data = {"fail": fails(i)}
        results: list[tuple[str, Any]] = []
        if journal is not None and create:
            journal(run_id, "", "created", data)
        for name in STEPS:
            ctx = PlainCtx(data, f"{run_id}:{name}")
            steps += 1
            try:
                result = ACTIONS[name](ctx)
            except PermanentError as exc:
                if journal is not None:
                    journal(run_id, name, "failed", str(exc))
                for done, value in reversed(results):
                    steps += 1
                    COMPENSATIONS[done](PlainCtx(data, f"{run_id}:{done}:compensate", value))
                    if journal is not None:
                        journal(run_id, done, "compensated", None)
                break
            if journal is not None:
                journal(run_id, name, "succeeded", result)
            results.append((name, result))
    return steps


class RawJournal:
    """A hand-written journal: one row and one commit per step, WAL, synchronous=FULL."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, "
                          "run_id TEXT NOT NULL, step TEXT NOT NULL, outcome TEXT NOT NULL, "
                          "result TEXT)")

    def __call__(self, run_id: str, step: str, outcome: str, result: Any) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO journal (run_id, step, outcome, result) "
                          "VALUES (?, ?, ?, ?)", (run_id, step, outcome, json.dumps(result)))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def run_engine(engine: Engine, runs: int) -> int:
    """Start and drive each run to its end, one after another; return steps."""
    for i in range(runs):
        view = engine.start("bench", {"fail": fails(i)})
        engine.advance(view.id)
    return steps_of(runs)


def check_engine(engine: Engine, runs: int) -> None:
    """The engine really ran the sagas: statuses as planned, compensations journaled."""
    views = engine.list_runs(limit=runs + 1)
    want = {"completed": sum(not fails(i) for i in range(runs)),
            "compensated": sum(fails(i) for i in range(runs))}
    got = {s: sum(v.status == s for v in views) for s in want}
    if got != want or len(views) != runs:
        raise SystemExit(f"benchmark runs ended wrongly: {got}, expected {want}")
    failed = next(v for v in views if v.status == "compensated")
    full = engine.get_run(failed.id)
    if full.compensated_steps() != list(reversed(STEPS[:FAILING_STEP])):
        raise SystemExit(f"unexpected compensations: {full.compensated_steps()}")


WAL_FRAME = 24 + 4096  # a WAL frame: its header and one 4 KiB page


def wal_frames(path: str) -> int:
    wal = f"{path}-wal"
    return (os.path.getsize(wal) - 32) // WAL_FRAME if os.path.exists(wal) else 0


def commits_per_saga(catalog: Catalog, path: str, runs: int) -> tuple[float, float]:
    """Write transactions per saga on the SQLite store, and WAL pages written per commit
    (an untimed, counted pass; checkpoints off so the WAL keeps every frame)."""
    store = SqliteStore(f"sqlite:///{path}")
    store._conn.execute("PRAGMA wal_autocheckpoint=0")
    count = 0
    tx = store._tx

    def counting_tx() -> Any:
        nonlocal count
        count += 1
        return tx()

    store._tx = counting_tx  # type: ignore[method-assign]
    with Engine(catalog, registry(), store, clock=SystemClock()) as engine:
        run_engine(engine, WARM_UP)
        count, before = 0, wal_frames(path)
        run_engine(engine, runs)
        frames = wal_frames(path) - before
        check_engine(engine, WARM_UP + runs)
    return count / runs, frames / count


def raw_frames_per_commit(path: str, runs: int) -> float:
    """WAL pages the raw journal writes per commit (counted like the store's)."""
    journal = RawJournal(path)
    journal.conn.execute("PRAGMA wal_autocheckpoint=0")
    run_plain(WARM_UP, journal)
    before = wal_frames(path)
    steps = run_plain(runs, journal)
    frames = wal_frames(path) - before
    journal.close()
    return frames / steps


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    steps = fn()
    return time.perf_counter() - start, steps


Setup = Callable[[], tuple[Callable[[], int], Callable[[], None]]]


def best(repeat: int, setups: dict[str, Setup]) -> dict[str, tuple[float, int]]:
    """The fastest of ``repeat`` passes of each configuration, the passes interleaved so a
    change in the machine's load hits every configuration alike. A setup returns (work,
    teardown) for one pass; only ``work`` is timed."""
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in setups}
    for _ in range(repeat):
        for name, setup in setups.items():
            work, teardown = setup()
            try:
                results[name].append(timed(work))
            finally:
                teardown()
    return {name: min(times) for name, times in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="sagas per memory pass")
    parser.add_argument("--sqlite-runs", type=int, default=300, help="sagas per SQLite pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best is kept)")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="concordia-bench-")
    with open(os.path.join(workdir, "bench.yaml"), "w") as fh:
        fh.write(SAGA_YAML)
    catalog = Catalog.load_strict([os.path.join(workdir, "bench.yaml")])
    counter = iter(range(1_000_000))

    def engine_pass(url_for: Callable[[], str | Store], runs: int
                    ) -> tuple[Callable[[], int], Callable[[], None]]:
        engine = Engine(catalog, registry(), url_for(), clock=SystemClock())
        run_engine(engine, WARM_UP)  # compiled machine, caches, first pages

        def work() -> int:
            return run_engine(engine, runs)

        def teardown() -> None:  # not timed: the engine really ran the sagas
            check_engine(engine, WARM_UP + runs)
            engine.close()
        return work, teardown

    def sqlite_url() -> str:
        return f"sqlite:///{workdir}/engine{next(counter)}.db"

    def sqlite_unsynced() -> Store:
        return SqliteStore(sqlite_url(), synchronous="OFF")

    def journal_pass(runs: int, create: bool = False
                     ) -> tuple[Callable[[], int], Callable[[], None]]:
        journal = RawJournal(os.path.join(workdir, f"raw{next(counter)}.db"))
        run_plain(WARM_UP, journal, create=create)
        return (lambda: run_plain(runs, journal, create=create)), journal.close

    # The last two configurations are diagnostics: the raw journal also committing each
    # run's start (the same N+1 commits the engine makes), and the SQLite path without
    # fsync (what the store costs in CPU).
    timings = best(args.repeat, {
        "plain": lambda: ((lambda: run_plain(args.runs)), lambda: None),
        "memory": lambda: engine_pass(lambda: "memory://", args.runs),
        "raw": lambda: journal_pass(args.sqlite_runs),
        "sqlite": lambda: engine_pass(sqlite_url, args.sqlite_runs),
        "raw_n1": lambda: journal_pass(args.sqlite_runs, create=True),
        "sqlite_off": lambda: engine_pass(sqlite_unsynced, args.sqlite_runs),
    })
    plain_t, plain_steps = timings["plain"]
    mem_t, mem_steps = timings["memory"]
    raw_t, raw_steps = timings["raw"]
    sql_t, sql_steps = timings["sqlite"]
    off_t, _ = timings["sqlite_off"]
    n1_t, n1_steps = timings["raw_n1"]
    commits, frames = commits_per_saga(catalog, os.path.join(workdir, "counted.db"), 100)
    raw_frames = raw_frames_per_commit(os.path.join(workdir, "raw-counted.db"), 100)
    plain_per_step = plain_t / plain_steps

    rows = []
    for store, t, steps, runs, floor_name, floor_t, floor_steps in (
            ("memory", mem_t, mem_steps, args.runs, "plain calls", plain_t, plain_steps),
            ("sqlite", sql_t, sql_steps, args.sqlite_runs, "raw sqlite3 journal", raw_t,
             raw_steps)):
        overhead = (t / steps - plain_per_step) * 1e6
        rows.append({
            "store": store,
            "sagas_per_s": round(runs / t, 1),
            "steps_per_s": round(steps / t, 1),
            "overhead_us_per_step": round(overhead, 1),
            "floor_steps_per_s": round(floor_steps / floor_t, 1),
            "floor": floor_name,
            "ratio_to_floor": round((steps / t) / (floor_steps / floor_t), 3),
            "runs": runs,
            "steps": steps,
        })
    rows[1]["commits_per_saga"] = round(commits, 2)
    rows[1]["same_commits_floor_steps_per_s"] = round(n1_steps / n1_t, 1)
    rows[1]["ratio_to_same_commits_floor"] = round((sql_steps / sql_t) / (n1_steps / n1_t), 3)
    rows[1]["wal_pages_per_commit"] = round(frames, 2)
    rows[1]["floor_wal_pages_per_commit"] = round(raw_frames, 2)
    rows[1]["steps_per_saga"] = round(sql_steps / args.sqlite_runs, 2)

    print(f"5-step saga, sequential runs, 1 in {FAIL_EVERY} failing at step "
          f"{FAILING_STEP + 1}; best of {args.repeat}; Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}")
    print(f"{'store':<8} {'sagas/s':>10} {'steps/s':>11} {'overhead µs/step':>17} "
          f"{'floor steps/s':>14} {'of floor':>9}  floor")
    for r in rows:
        print(f"{r['store']:<8} {r['sagas_per_s']:>10.1f} {r['steps_per_s']:>11.1f} "
              f"{r['overhead_us_per_step']:>17.1f} {r['floor_steps_per_s']:>14.1f} "
              f"{r['ratio_to_floor']:>9.1%}  {r['floor']}")
    mem, sql = rows
    print(f"targets: memory overhead < {MEMORY_TARGET_US:g} µs/step: "
          f"{'met' if mem['overhead_us_per_step'] < MEMORY_TARGET_US else 'MISSED'}; "
          f"SQLite >= {SQLITE_TARGET_RATIO:.0%} of the raw journal: "
          f"{'met' if sql['ratio_to_floor'] >= SQLITE_TARGET_RATIO else 'MISSED'}")
    us = 1e6
    per_saga = {
        "handlers (plain calls)": plain_t / args.runs * us,
        "engine CPU (memory store)": (mem_t - plain_t) / args.runs * us,
        "SQLite store CPU (synchronous=OFF minus memory)":
            (off_t / args.sqlite_runs - mem_t / args.runs) * us,
        "durable commits (FULL minus OFF)": (sql_t - off_t) / args.sqlite_runs * us,
    }
    total = sql_t / args.sqlite_runs * us
    raw_commit = raw_t / raw_steps * us
    steps_per_saga = sql_steps / args.sqlite_runs
    print(f"\nwhere a SQLite saga's {total:.0f} µs go ({commits:.1f} commits for "
          f"{steps_per_saga:.1f} steps, {frames:.2f} WAL pages each; the raw journal commits "
          f"once per step, {raw_frames:.2f} WAL pages and {raw_commit:.0f} µs each):")
    for what, value in per_saga.items():
        print(f"  {what:<48} {value:8.0f} µs  {value / total:6.1%}")
    print(f"  ceiling with zero CPU at {commits:.1f} commits/saga: "
          f"{steps_per_saga / commits:.0%} of the raw journal")
    print(f"against a raw journal that also commits each run's start (N+1 commits, like the "
          f"engine): {sql['ratio_to_same_commits_floor']:.1%} of its "
          f"{sql['same_commits_floor_steps_per_s']:.0f} steps/s")
    print()
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
