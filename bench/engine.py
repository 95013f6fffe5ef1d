"""Engine throughput against its floors, measured in one process run.

    .venv/bin/python bench/engine.py [--runs N] [--sqlite-runs N] [--repeat K] [--quick]

A saga of L steps (L = 5, and 50 for the length rows), run start-then-drive, where every
fifth run fails for good at step L-1, so the steps before it are compensated. A "step" is
one handler call, action or compensation (5.4 per saga on average for L = 5).

Configurations (the ``store``, ``engine``, ``concurrency``, ``saga_length`` fields):

- memory, sync / async: the engine on the in-memory store. The floor is the same
  handlers called as plain functions (sync) or awaited coroutines (async) in the same
  order; overhead per step is (engine time - floor time) / steps. The async engine runs
  async handlers (a service's own); sync handlers on the async engine run in its thread
  pool, whose hand-off costs what a thread wake-up costs on the machine (a row shows it).
- sqlite, sync / async: the engine on SQLite (WAL, ``synchronous=FULL``). The floor is a
  raw sqlite3 journal that commits once per step (one row with the step's JSON result);
  ``ratio_to_same_commits_floor`` compares with the same journal also committing each
  run's start: the N+1 commits a run must make (its start durable before its first side
  effect, each result before the next step).
- sqlite, async, concurrency 16: 16 runs in flight (16 clients, each starting and driving
  its runs); the async engine's writer groups the commits of runs in flight into one
  transaction and one fsync. Compared with the sequential one-commit floor.
- length: L = 50 against L = 5 (memory and SQLite, sync): overhead per step should not
  grow with the saga's length.
- stored runs: the memory store already holding 1,000 or 20,000 finished runs, each saga
  started and driven with ``run_until_idle`` (which asks the store for due runs).
- for_each: a saga of one step that fans out over a list of 100 items, where every fifth
  run fails for good at item 50, so items 0-49 are compensated, last first. Here a "step"
  is one item's handler call, action or compensation (100.2 per saga on average). The
  memory floor is the same handler called per item as a plain function (and the
  compensations for the failing runs); the SQLite floor is the raw journal committing
  once per item call.

Each figure is the best of ``--repeat`` interleaved passes after a warm-up, each pass started
on a collected heap. The table comes first, then one JSON object per line per configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "engine") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "engine"))

from concordia.clock import SystemClock  # noqa: E402
from concordia.definitions.catalog import Catalog  # noqa: E402
from concordia.errors import PermanentError  # noqa: E402
from concordia.registry import Registry  # noqa: E402
from concordia.runtime.aengine import AsyncEngine  # noqa: E402
from concordia.runtime.engine import Engine  # noqa: E402
from concordia.store.memory import MemoryStore  # noqa: E402
from concordia.store.sqlite import SqliteStore  # noqa: E402

FAIL_EVERY = 5  # 20% of runs
MEMORY_TARGET_US = 40.0
FAN_ITEMS, FAN_FAILS_AT = 100, 50
FAN_MEMORY_TARGET_US = 60.0
FAN_SQLITE_TARGET_RATIO = 0.60
SQLITE_TARGET_RATIO = 0.70
IN_FLIGHT_TARGET = 2.0
ASYNC_TARGET = 0.90
LENGTH_TARGET = 1.2
WARM_UP = 20
IN_FLIGHT = 16


def fails(i: int) -> bool:
    return i % FAIL_EVERY == FAIL_EVERY - 1


@dataclass(frozen=True)
class Shape:
    """A bench saga of ``length`` steps, failing runs failing at its step L-1."""

    length: int

    @property
    def name(self) -> str:
        return f"bench{self.length}"

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.length))

    @property
    def failing(self) -> int:
        return self.length - 2

    def yaml(self) -> str:
        return f"name: {self.name}\nversion: 1\nsteps:\n" + "".join(
            f"  - name: {s}\n    action: bench.{s}\n    compensate: bench.undo_{s}\n"
            for s in self.steps)

    def steps_of(self, runs: int) -> int:
        failed = sum(fails(i) for i in range(runs))
        return (runs - failed) * self.length + failed * (2 * self.failing + 1)


FIVE, FIFTY = Shape(5), Shape(50)


# -- the handlers (shared by every configuration) ------------------------------------------------


def registry(shape: Shape, *, asynchronous: bool = False) -> Registry:
    reg = Registry()
    failing = shape.steps[shape.failing]
    for name in shape.steps:
        reg.add_action(f"bench.{name}", _action(name, name == failing, asynchronous))
        reg.add_compensation(f"bench.undo_{name}", _undo(asynchronous))
    return reg


def _action(name: str, failing: bool, asynchronous: bool) -> Callable[[Any], Any]:
    def act(ctx: Any) -> Any:
        if failing and ctx.input["fail"]:
            raise PermanentError(f"{name} refused")
        return {"step": name, "ref": ctx.idempotency_key}

    async def aact(ctx: Any) -> Any:
        return act(ctx)

    return aact if asynchronous else act


def _undo(asynchronous: bool) -> Callable[[Any], Any]:
    def undo(ctx: Any) -> Any:
        return None

    async def aundo(ctx: Any) -> Any:
        return None

    return aundo if asynchronous else undo


@dataclass
class PlainCtx:
    """What a plain call hands the handler: the fields the handlers read."""

    input: dict[str, Any]
    idempotency_key: str
    result: Any = None


def plain_calls(shape: Shape, runs: int, journal: Callable[[str, str, str, Any], None] | None
                = None, *, create: bool = False) -> int:
    """The saga's handlers as plain calls (optionally journaling each step, and with
    ``create`` also each run's start); return steps."""
    reg = registry(shape)
    steps = 0
    for i in range(runs):
        run_id = f"r{i}"
        data = {"fail": fails(i)}
        done: list[tuple[str, Any]] = []
        if journal is not None and create:
            journal(run_id, "", "created", data)
        for name in shape.steps:
            steps += 1
            try:
                result = reg.get_action(f"bench.{name}").fn(PlainCtx(data, f"{run_id}:{name}"))
            except PermanentError as exc:
                if journal is not None:
                    journal(run_id, name, "failed", str(exc))
                for prior, value in reversed(done):
                    steps += 1
                    reg.get_compensation(f"bench.undo_{prior}").fn(
                        PlainCtx(data, f"{run_id}:{prior}:compensate", value))
                    if journal is not None:
                        journal(run_id, prior, "compensated", None)
                break
            if journal is not None:
                journal(run_id, name, "succeeded", result)
            done.append((name, result))
    return steps


async def plain_awaits(shape: Shape, runs: int) -> int:
    """The async handlers awaited in order: the async engine's floor."""
    reg = registry(shape, asynchronous=True)
    steps = 0
    for i in range(runs):
        data = {"fail": fails(i)}
        done: list[tuple[str, Any]] = []
        for name in shape.steps:
            steps += 1
            try:
                result = await reg.get_action(f"bench.{name}").fn(PlainCtx(data, f"r{i}:{name}"))
            except PermanentError:
                for prior, value in reversed(done):
                    steps += 1
                    await reg.get_compensation(f"bench.undo_{prior}").fn(
                        PlainCtx(data, "", value))
                break
            done.append((name, result))
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


# -- driving the engines -------------------------------------------------------------------------


def drive_sync(engine: Engine, shape: Shape, runs: int, offset: int = 0) -> int:
    for i in range(offset, offset + runs):
        engine.advance(engine.start(shape.name, {"fail": fails(i)}).id)
    return shape.steps_of(runs)


async def drive_async(engine: AsyncEngine, shape: Shape, runs: int, clients: int = 1) -> int:
    async def client(k: int) -> None:
        for i in range(k, runs, clients):
            view = await engine.start(shape.name, {"fail": fails(i)})
            await engine.advance(view.id)

    await asyncio.gather(*(client(k) for k in range(clients)))
    return shape.steps_of(runs)


def check(store: Any, shape: Shape, runs: int) -> None:
    """The engine really ran the sagas: statuses as planned, compensations journaled."""
    views = store.list_runs(limit=runs + 1)
    want = {"completed": sum(not fails(i) for i in range(runs)),
            "compensated": sum(fails(i) for i in range(runs))}
    got = {s: sum(v.status == s for v in views) for s in want}
    if got != want or len(views) != runs:
        raise SystemExit(f"benchmark runs ended wrongly: {got}, expected {want}")
    failed = next(v for v in views if v.status == "compensated")
    undone = [h.step for h in store.history(failed.id) if h.kind == "compensation.succeeded"]
    if undone != list(reversed(shape.steps[:shape.failing])):
        raise SystemExit(f"unexpected compensations: {undone}")


# -- the fan-out (for_each) configuration -------------------------------------------------------

FAN_YAML = (f"name: fan{FAN_ITEMS}\nversion: 1\nsteps:\n  - name: items\n"
            "    action: bench.item\n    compensate: bench.undo_item\n"
            "    for_each: input.items\n")


def fan_items(i: int) -> list[int]:
    """The list run ``i`` fans out over: a failing run's item FAN_FAILS_AT is refused."""
    items = list(range(FAN_ITEMS))
    if fails(i):
        items[FAN_FAILS_AT] = -1
    return items


def fan_steps_of(runs: int) -> int:
    failed = sum(fails(i) for i in range(runs))
    return (runs - failed) * FAN_ITEMS + failed * (2 * FAN_FAILS_AT + 1)


def fan_registry() -> Registry:
    reg = Registry()

    def item(ctx: Any) -> Any:
        if ctx.item < 0:
            raise PermanentError(f"item {ctx.index} refused")
        return {"item": ctx.item, "ref": ctx.idempotency_key}

    reg.add_action("bench.item", item)
    reg.add_compensation("bench.undo_item", lambda ctx: None)
    return reg


@dataclass
class PlainItemCtx:
    item: Any
    index: int
    idempotency_key: str
    result: Any = None


def plain_fan_calls(runs: int, journal: Callable[[str, str, str, Any], None] | None = None
                    ) -> int:
    """The fan-out's handler called per item as a plain function (optionally journaling
    each call with one commit); return item calls."""
    reg = fan_registry()
    act, undo = reg.get_action("bench.item").fn, reg.get_compensation("bench.undo_item").fn
    steps = 0
    for i in range(runs):
        run_id = f"r{i}"
        done: list[tuple[int, Any]] = []
        for index, value in enumerate(fan_items(i)):
            steps += 1
            name = f"items[{index}]"
            try:
                result = act(PlainItemCtx(value, index, f"{run_id}:items:{index}"))
            except PermanentError as exc:
                if journal is not None:
                    journal(run_id, name, "failed", str(exc))
                for prior, prior_result in reversed(done):
                    steps += 1
                    undo(PlainItemCtx(prior, prior, f"{run_id}:items:{prior}:compensate",
                                      prior_result))
                    if journal is not None:
                        journal(run_id, f"items[{prior}]", "compensated", None)
                break
            if journal is not None:
                journal(run_id, name, "succeeded", result)
            done.append((index, result))
    return steps


def drive_fan(engine: Engine, runs: int, offset: int = 0) -> int:
    for i in range(offset, offset + runs):
        engine.advance(engine.start(f"fan{FAN_ITEMS}", {"items": fan_items(i)}).id)
    return fan_steps_of(runs)


def check_fan(store: Any, runs: int) -> None:
    """The engine really fanned out: statuses as planned, the failing runs' items undone
    last first."""
    views = store.list_runs(limit=runs + 1)
    got = {s: sum(v.status == s for v in views) for s in ("completed", "compensated")}
    want = {"completed": sum(not fails(i) for i in range(runs)),
            "compensated": sum(fails(i) for i in range(runs))}
    if got != want or len(views) != runs:
        raise SystemExit(f"fan-out runs ended wrongly: {got}, expected {want}")
    failed = next(v for v in views if v.status == "compensated")
    undone = [h.step for h in store.history(failed.id) if h.kind == "compensation.succeeded"]
    if undone != [f"items[{k}]" for k in reversed(range(FAN_FAILS_AT))]:
        raise SystemExit(f"unexpected fan-out compensations: {undone[:5]}...")


# -- the passes ------------------------------------------------------------------------------


@dataclass
class Pass:
    """One timed pass: ``work`` returns steps; ``teardown`` checks and closes (untimed)."""

    work: Callable[[], int]
    teardown: Callable[[], None] = lambda: None


@dataclass
class Bench:
    workdir: str
    catalogs: dict[int, Catalog]  # by saga length
    counter: Any = field(default_factory=lambda: iter(range(1_000_000)))

    def path(self, stem: str) -> str:
        return os.path.join(self.workdir, f"{stem}{next(self.counter)}.db")

    def plain(self, shape: Shape, runs: int) -> Pass:
        return Pass(lambda: plain_calls(shape, runs))

    def plain_async(self, shape: Shape, runs: int) -> Pass:
        return Pass(lambda: asyncio.run(plain_awaits(shape, runs)))

    def raw(self, shape: Shape, runs: int, *, create: bool = False) -> Pass:
        journal = RawJournal(self.path("raw"))
        plain_calls(shape, WARM_UP, journal, create=create)
        return Pass(lambda: plain_calls(shape, runs, journal, create=create), journal.close)

    def sync(self, store: Any, shape: Shape, runs: int) -> Pass:
        engine = Engine(self.catalogs[shape.length], registry(shape), store,
                        clock=SystemClock())
        drive_sync(engine, shape, WARM_UP)  # compiled machine, caches, first pages

        def teardown() -> None:
            check(engine.store, shape, WARM_UP + runs)
            engine.close()

        return Pass(lambda: drive_sync(engine, shape, runs, WARM_UP), teardown)

    def asynchronous(self, store: Any, shape: Shape, runs: int, clients: int = 1) -> Pass:
        loop = asyncio.new_event_loop()
        engine = AsyncEngine(self.catalogs[shape.length], registry(shape, asynchronous=True),
                             store, clock=SystemClock(), claim_new_runs=True)
        loop.run_until_complete(drive_async(engine, shape, WARM_UP))

        def teardown() -> None:
            check(engine.store, shape, WARM_UP + runs)
            loop.run_until_complete(engine.aclose())
            loop.close()

        return Pass(lambda: loop.run_until_complete(drive_async(engine, shape, runs, clients)),
                    teardown)

    def stored(self, stored: int, runs: int) -> Pass:
        """``run_until_idle`` per saga on a memory store already holding finished runs."""
        store = MemoryStore()
        engine = Engine(self.catalogs[5], registry(FIVE), store, clock=SystemClock())
        for i in range(stored):
            engine.advance(engine.start(FIVE.name, {"fail": fails(i)}).id)

        def work() -> int:
            for i in range(runs):
                engine.start(FIVE.name, {"fail": fails(i)})
                engine.run_until_idle()
            return FIVE.steps_of(runs)

        return Pass(work, engine.close)

    def fan(self, store: Any, runs: int) -> Pass:
        engine = Engine(self.catalogs[FAN_ITEMS], fan_registry(), store, clock=SystemClock())
        drive_fan(engine, WARM_UP // 4)

        def teardown() -> None:
            check_fan(engine.store, WARM_UP // 4 + runs)
            engine.close()

        return Pass(lambda: drive_fan(engine, runs, WARM_UP // 4), teardown)

    def plain_fan(self, runs: int) -> Pass:
        return Pass(lambda: plain_fan_calls(runs))

    def raw_fan(self, runs: int) -> Pass:
        journal = RawJournal(self.path("rawfan"))
        plain_fan_calls(2, journal)
        return Pass(lambda: plain_fan_calls(runs, journal), journal.close)


def best(repeat: int, setups: dict[str, Callable[[], Pass]]) -> dict[str, tuple[float, int]]:
    """The fastest of ``repeat`` passes of each configuration, the passes interleaved so a
    change in the machine's load hits every configuration alike."""
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in setups}
    for _ in range(repeat):
        for name, setup in setups.items():
            one = setup()
            try:
                # Each pass starts on a collected heap: the garbage an earlier configuration
                # left is not billed to this one (collections during the pass still count).
                gc.collect()
                start = time.perf_counter()
                steps = one.work()
                results[name].append((time.perf_counter() - start, steps))
            finally:
                one.teardown()
    return {name: min(times) for name, times in results.items()}


WAL_FRAME = 24 + 4096  # a WAL frame: its header and one 4 KiB page


def wal_frames(path: str) -> int:
    wal = f"{path}-wal"
    return (os.path.getsize(wal) - 32) // WAL_FRAME if os.path.exists(wal) else 0


def commits_per_saga(bench: Bench, runs: int) -> tuple[float, float]:
    """Write transactions per saga on the SQLite store, and WAL pages per commit (an
    untimed, counted pass; checkpoints off so the WAL keeps every frame)."""
    path = bench.path("counted")
    store = SqliteStore(f"sqlite:///{path}")
    store._conn.execute("PRAGMA wal_autocheckpoint=0")
    count = 0
    tx = store._tx

    def counting_tx(*args: Any) -> Any:
        nonlocal count
        count += 1
        return tx(*args)

    store._tx = counting_tx  # type: ignore[method-assign,assignment]
    with Engine(bench.catalogs[5], registry(FIVE), store, clock=SystemClock()) as engine:
        drive_sync(engine, FIVE, WARM_UP)
        count, before = 0, wal_frames(path)
        drive_sync(engine, FIVE, runs, WARM_UP)
        frames = wal_frames(path) - before
    return count / runs, frames / count


def in_flight_batches(bench: Bench, runs: int) -> float:
    """Writes per transaction of the async engine's writer with 16 runs in flight."""
    loop = asyncio.new_event_loop()
    engine = AsyncEngine(bench.catalogs[5], registry(FIVE, asynchronous=True),
                         f"sqlite:///{bench.path('batches')}", clock=SystemClock(),
                         claim_new_runs=True)
    loop.run_until_complete(drive_async(engine, FIVE, runs, IN_FLIGHT))
    writer = engine.astore.writer
    assert writer is not None
    per_batch = writer.writes / max(writer.batches, 1)
    loop.run_until_complete(engine.aclose())
    loop.close()
    return per_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="sagas per memory pass")
    parser.add_argument("--sqlite-runs", type=int, default=300, help="sagas per SQLite pass")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best is kept)")
    parser.add_argument("--quick", action="store_true", help="fewer sagas (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sqlite_runs, args.repeat = 300, 60, 1

    workdir = tempfile.mkdtemp(prefix="concordia-bench-")
    catalogs = {}
    for shape in (FIVE, FIFTY):
        path = os.path.join(workdir, f"{shape.name}.yaml")
        with open(path, "w") as fh:
            fh.write(shape.yaml())
        catalogs[shape.length] = Catalog.load_strict([path])
    fan_path = os.path.join(workdir, f"fan{FAN_ITEMS}.yaml")
    with open(fan_path, "w") as fh:
        fh.write(FAN_YAML)
    catalogs[FAN_ITEMS] = Catalog.load_strict([fan_path])
    bench = Bench(workdir, catalogs)
    runs, sql_runs = args.runs, args.sqlite_runs
    long_runs, long_sql = max(runs // 10, 20), max(sql_runs // 10, 10)
    fan_runs, fan_sql = max(runs // 20, 10), max(sql_runs // 20, 3)

    def sqlite() -> str:
        return f"sqlite:///{bench.path('engine')}"

    setups: dict[str, Callable[[], Pass]] = {
        "plain": lambda: bench.plain(FIVE, runs),
        "plain_async": lambda: bench.plain_async(FIVE, runs),
        "plain_50": lambda: bench.plain(FIFTY, long_runs),
        "memory/sync": lambda: bench.sync("memory://", FIVE, runs),
        "memory/async": lambda: bench.asynchronous("memory://", FIVE, runs),
        "memory/sync/50": lambda: bench.sync("memory://", FIFTY, long_runs),
        "raw": lambda: bench.raw(FIVE, sql_runs),
        "raw_n1": lambda: bench.raw(FIVE, sql_runs, create=True),
        "sqlite/sync": lambda: bench.sync(sqlite(), FIVE, sql_runs),
        "sqlite/async": lambda: bench.asynchronous(sqlite(), FIVE, sql_runs),
        "sqlite/async/16": lambda: bench.asynchronous(sqlite(), FIVE, sql_runs * 2, IN_FLIGHT),
        "raw_50": lambda: bench.raw(FIFTY, long_sql),
        "sqlite/sync/50": lambda: bench.sync(sqlite(), FIFTY, long_sql),
        "stored/1000": lambda: bench.stored(1000, runs // 4),
        "stored/20000": lambda: bench.stored(20000, runs // 4),
        "plain_fan": lambda: bench.plain_fan(fan_runs),
        "memory/fan": lambda: bench.fan("memory://", fan_runs),
        "raw_fan": lambda: bench.raw_fan(fan_sql),
        "sqlite/fan": lambda: bench.fan(sqlite(), fan_sql),
    }
    timings = best(args.repeat, setups)
    commits, frames = commits_per_saga(bench, 100)
    per_batch = in_flight_batches(bench, 200)

    def per_step(name: str) -> float:
        t, steps = timings[name]
        return t / steps

    rows: list[dict[str, Any]] = []

    def row(name: str, store: str, engine: str, concurrency: int, shape: Shape, floor: str,
            runs_: int, **extra: Any) -> dict[str, Any]:
        """A configuration's figures; overhead is counted against the plain handler calls
        of the same shape (awaited, for the async engine)."""
        t, steps = timings[name]
        floor_t, floor_steps = timings[floor]
        base = ("plain_50" if shape is FIFTY else
                "plain_async" if engine == "async" else "plain")
        r = {"store": store, "engine": engine, "concurrency": concurrency,
             "saga_length": shape.length, "sagas_per_s": round(runs_ / t, 1),
             "steps_per_s": round(steps / t, 1),
             "overhead_us_per_step": round((per_step(name) - per_step(base)) * 1e6, 1),
             "floor": floor, "floor_steps_per_s": round(floor_steps / floor_t, 1),
             "ratio_to_floor": round((steps / t) / (floor_steps / floor_t), 3),
             "runs": runs_, "steps": steps, **extra}
        rows.append(r)
        return r

    mem_sync = row("memory/sync", "memory", "sync", 1, FIVE, "plain", runs)
    mem_async = row("memory/async", "memory", "async", 1, FIVE, "plain_async", runs)
    mem_async["ratio_to_sync"] = round(mem_async["sagas_per_s"] / mem_sync["sagas_per_s"], 3)
    mem_50 = row("memory/sync/50", "memory", "sync", 1, FIFTY, "plain_50", long_runs)
    mem_50["overhead_ratio_to_5_steps"] = round(
        mem_50["overhead_us_per_step"] / mem_sync["overhead_us_per_step"], 3)
    n1_t, n1_steps = timings["raw_n1"]
    sql_sync = row("sqlite/sync", "sqlite", "sync", 1, FIVE, "raw", sql_runs,
                   commits_per_saga=round(commits, 2), wal_pages_per_commit=round(frames, 2))
    sql_async = row("sqlite/async", "sqlite", "async", 1, FIVE, "raw", sql_runs)
    for r in (sql_sync, sql_async):
        r["ratio_to_same_commits_floor"] = round(r["steps_per_s"] / (n1_steps / n1_t), 3)
    sql_async["ratio_to_sync"] = round(sql_async["sagas_per_s"] / sql_sync["sagas_per_s"], 3)
    flight = row("sqlite/async/16", "sqlite", "async", IN_FLIGHT, FIVE, "raw", sql_runs * 2,
                 writes_per_transaction=round(per_batch, 2))
    flight["ratio_to_same_commits_floor"] = round(flight["steps_per_s"] / (n1_steps / n1_t), 3)
    sql_50 = row("sqlite/sync/50", "sqlite", "sync", 1, FIFTY, "raw_50", long_sql)
    sql_50["overhead_ratio_to_5_steps"] = round(
        sql_50["overhead_us_per_step"] / sql_sync["overhead_us_per_step"], 3)
    for stored in (1000, 20000):
        t, steps = timings[f"stored/{stored}"]
        rows.append({"store": "memory", "engine": "sync", "concurrency": 1, "saga_length": 5,
                     "stored_runs": stored, "us_per_saga": round(t / (runs // 4) * 1e6, 1),
                     "sagas_per_s": round((runs // 4) / t, 1), "runs": runs // 4,
                     "steps": steps})
    rows[-1]["ratio_to_1000_stored"] = round(rows[-1]["us_per_saga"] / rows[-2]["us_per_saga"],
                                             3)
    fan_rows = []
    for store, name, floor, count in (("memory", "memory/fan", "plain_fan", fan_runs),
                                      ("sqlite", "sqlite/fan", "raw_fan", fan_sql)):
        t, steps = timings[name]
        floor_t, floor_steps = timings[floor]
        plain_t, plain_steps = timings["plain_fan"]
        fan_rows.append({
            "configuration": "for_each", "store": store, "engine": "sync", "concurrency": 1,
            "items": FAN_ITEMS, "fails_at_item": FAN_FAILS_AT, "failing_runs": 1 / FAIL_EVERY,
            "sagas_per_s": round(count / t, 1), "item_calls_per_s": round(steps / t, 1),
            "overhead_us_per_item": round((t / steps - plain_t / plain_steps) * 1e6, 1),
            "floor": floor, "floor_item_calls_per_s": round(floor_steps / floor_t, 1),
            "ratio_to_floor": round((steps / t) / (floor_steps / floor_t), 3),
            "runs": count, "item_calls": steps})
    mem_fan, sql_fan = fan_rows
    rows += fan_rows

    print(f"Sagas run start-then-drive, 1 in {FAIL_EVERY} failing at step L-1; best of "
          f"{args.repeat}; Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"{'store':<7}{'engine':<7}{'in flight':>10}{'L':>4}{'sagas/s':>10}{'steps/s':>10}"
          f"{'µs/step over':>14}{'of floor':>10}  floor")
    for r in rows:
        if "stored_runs" in r or "configuration" in r:
            continue
        print(f"{r['store']:<7}{r['engine']:<7}{r['concurrency']:>10}{r['saga_length']:>4}"
              f"{r['sagas_per_s']:>10.1f}{r['steps_per_s']:>10.1f}"
              f"{r['overhead_us_per_step']:>14.1f}{r['ratio_to_floor']:>10.1%}  {r['floor']}")
    for r in rows:
        if "stored_runs" in r:
            print(f"memory store holding {r['stored_runs']:>6} finished runs: "
                  f"{r['us_per_saga']:.0f} µs per saga with run_until_idle")
    for r in fan_rows:
        print(f"for_each over {FAN_ITEMS} items ({r['store']}): {r['item_calls_per_s']:.0f} "
              f"item calls/s, {r['overhead_us_per_item']:.1f} µs/item over plain calls, "
              f"{r['ratio_to_floor']:.1%} of {r['floor']}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print("\ntargets:")
    print(f"  memory overhead < {MEMORY_TARGET_US:g} µs/step: sync "
          f"{mem_sync['overhead_us_per_step']:.1f}, async {mem_async['overhead_us_per_step']:.1f}"
          f" — {verdict(max(mem_sync['overhead_us_per_step'], mem_async['overhead_us_per_step']) < MEMORY_TARGET_US)}")  # noqa: E501
    print(f"  sequential SQLite >= {SQLITE_TARGET_RATIO:.0%} of the same-commits floor: "
          f"{sql_sync['ratio_to_same_commits_floor']:.1%} — "
          f"{verdict(sql_sync['ratio_to_same_commits_floor'] >= SQLITE_TARGET_RATIO)} "
          f"({commits:.1f} commits/saga, {frames:.2f} WAL pages each)")
    seq_floor = (timings["raw"][1] / timings["raw"][0]) / (FIVE.steps_of(sql_runs) / sql_runs)
    flight_ratio = flight["sagas_per_s"] / seq_floor
    flight["ratio_to_sequential_floor_sagas"] = round(flight_ratio, 3)
    print(f"  {IN_FLIGHT} in flight on SQLite >= {IN_FLIGHT_TARGET:g}x the sequential floor's "
          f"sagas/s: {flight_ratio:.2f}x ({flight['sagas_per_s']:.0f} against "
          f"{seq_floor:.0f}; {per_batch:.1f} writes per transaction) — "
          f"{verdict(flight_ratio >= IN_FLIGHT_TARGET)}")
    for store, r in (("memory", mem_async), ("SQLite", sql_async)):
        print(f"  async sequential within 10% of sync ({store}): {r['ratio_to_sync']:.0%} — "
              f"{verdict(r['ratio_to_sync'] >= ASYNC_TARGET)}")
    for store, r in (("memory", mem_50), ("SQLite", sql_50)):
        print(f"  50-step overhead per step within {LENGTH_TARGET:g}x of 5-step ({store}): "
              f"{r['overhead_ratio_to_5_steps']:.2f}x — "
              f"{verdict(r['overhead_ratio_to_5_steps'] <= LENGTH_TARGET)}")
    stored20k = next(r for r in rows if r.get("stored_runs") == 20000)
    print(f"  memory store at 20,000 stored runs within {LENGTH_TARGET:g}x of 1,000: "
          f"{stored20k['ratio_to_1000_stored']:.2f}x — "
          f"{verdict(stored20k['ratio_to_1000_stored'] <= LENGTH_TARGET)}")
    print(f"  for_each per-item overhead on memory < {FAN_MEMORY_TARGET_US:g} µs: "
          f"{mem_fan['overhead_us_per_item']:.1f} — "
          f"{verdict(mem_fan['overhead_us_per_item'] < FAN_MEMORY_TARGET_US)}")
    print(f"  for_each on SQLite >= {FAN_SQLITE_TARGET_RATIO:.0%} of a raw journal committing "
          f"once per item: {sql_fan['ratio_to_floor']:.1%} — "
          f"{verdict(sql_fan['ratio_to_floor'] >= FAN_SQLITE_TARGET_RATIO)}")
    print()
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
