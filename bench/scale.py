"""Scale-out figures: SQLite and PostgreSQL, runs one at a time and several in flight,
worker processes, next to a raw journal floor and DBOS on the same database, with what
each step costs the database and the processes.

    .venv/bin/python bench/scale.py [--runs N] [--repeat K] [--quick] [--no-dbos]

The saga is bench/engine.py's 5-step one (every fifth run fails for good at step 4, so
three steps are compensated): 5.4 handler calls (steps) per saga on average, and N+1 =
6.4 durable commits (the run's creation, then each step's result with the next step's
start).

Rows (the ``db``, ``concurrency``, ``workers`` and ``handler_ms`` fields):

- workers 1 (this process), concurrency 1, 8 (and 16 on SQLite): an engine in this
  process starts and drives each run and claims the runs it starts: one run at a time on
  the sync engine, several at once on the async engine (that many clients; the writes of
  runs in flight share transactions). ``floor_sagas_per_s`` is a raw journal on the same
  database committing once per step, one run at a time (psycopg in autocommit, one
  ``INSERT`` and one round trip a commit; sqlite3 in a transaction with ``fsync``), and
  ``ratio_to_same_commits_floor`` compares with the same journal also committing each
  run's creation. ``dbos_sagas_per_s`` is DBOS running the same saga (each step a
  ``@DBOS.step``, the compensations steps too, in a ``@DBOS.workflow``) on the same
  database, ``concurrency`` workflows at once, in a process of its own.
- workers 1, 2 (and 4), db postgresql: worker processes (``AsyncEngine.work``) share
  runs created beforehand; sagas/s from the go signal until every run ended. With
  ``handler_ms`` 0 the handlers return at once (8 in flight per worker); with
  ``handler_ms`` 50 each handler waits 50 ms on a timer, as one waiting on I/O does (16 in
  flight per worker): what scales then is the claim path, not the CPU.

Costs (per step, where a step is one handler call):

- ``worker_cpu_us_per_step``: the Concordia process's CPU (user + system; the worker
  processes' together) over the pass; ``dbos_cpu_us_per_step`` the DBOS process's.
- ``peak_rss_mb``: the largest worker process's peak resident set (VmHWM);
  ``dbos_peak_rss_mb`` the DBOS process's (both load the saga and run it to the end).
- PostgreSQL: ``db_cpu_us_per_step``, the CPU of the server backends serving the pass
  (``/proc/<pid>/stat``, found by ``application_name``), and ``wal_bytes_per_step``
  (``pg_current_wal_lsn()`` before and after), beside the raw journal's per commit
  (``floor_db_cpu_us_per_commit``, ``floor_wal_bytes_per_commit``);
  ``round_trips_per_step`` counted by a TCP proxy in front of the server over a pass of
  its own (untimed), the floor's per commit beside it.
- SQLite: ``floor_cpu_us_per_commit``, the raw journal's process CPU per commit.

Each speed is the best of ``--repeat`` interleaved passes (Concordia, floors and DBOS in
turn) after a warm-up; each cost is its lowest over those passes. The table comes first,
then one JSON object per line per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (os.path.join(ROOT, "engine"), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)


def worker_registry(handler_ms: float) -> Any:
    """The 5-step saga's handlers (as bench/engine.py's), built without importing that
    module: it loads the SQLite store, which a PostgreSQL worker does not, and the worker's
    resident memory is one of the figures. With ``handler_ms`` each handler first waits
    that long on a timer (an async handler waiting on I/O)."""
    from concordia.errors import PermanentError
    from concordia.registry import Registry

    registry = Registry()
    delay = handler_ms / 1000.0
    for i in range(5):
        def act(ctx: Any, name: str = f"s{i}", failing: bool = i == 3) -> Any:
            if failing and ctx.input["fail"]:
                raise PermanentError(f"{name} refused")
            return {"step": name, "ref": ctx.idempotency_key}

        async def slow_act(ctx: Any, act: Any = act) -> Any:
            await asyncio.sleep(delay)
            return act(ctx)

        async def slow_undo(ctx: Any) -> None:
            await asyncio.sleep(delay)

        registry.add_action(f"bench.s{i}", slow_act if delay else act)
        registry.add_compensation(f"bench.undo_s{i}", slow_undo if delay else lambda ctx: None)
    return registry


def worker_child(url: str, definitions: str, concurrency: int, handler_ms: float) -> None:
    """A worker: says ready, waits for go, works until SIGTERM."""
    import signal

    from concordia.definitions.catalog import Catalog
    from concordia.runtime.aengine import AsyncEngine

    engine = AsyncEngine(Catalog.load_strict([definitions]), worker_registry(handler_ms), url)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, engine.stop)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        async with engine:
            await engine.work(concurrency=concurrency, poll_interval=0.2)

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:2] == ["--child-worker"]:
    worker_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    raise SystemExit(0)

from pgcost import (  # noqa: E402
    PG,
    RoundTrips,
    ServerCpu,
    peak_rss_mb,
    process_cpu_s,
    wal_lsn,
    with_app,
)

from engine import (  # noqa: E402
    FIVE,
    RawJournal,
    check,
    drive_async,
    drive_sync,
    fails,
    plain_calls,
    registry,
)

DBOS_DB = "concordia_bench_dbos"
DBOS_TARGET = 5.0
SAME_COMMITS_TARGET = 0.70  # PostgreSQL, one run at a time
IN_FLIGHT_TARGET = 1.3  # PostgreSQL, 8 in flight, against the sequential one-commit floor
DB_CPU_TARGET = 1.5  # server CPU per step against the raw journal's per commit
WAL_TARGET = 2.0
CPU_TO_DBOS_TARGET = 0.10
SQLITE_CPU_TARGET = 4.0  # 16 in flight on SQLite, against the raw journal's CPU per commit
WORKERS_TARGETS = {2: 1.8, 4: 3.4}  # I/O-bound handlers: n workers against one
RSS_TARGET_MB = 60.0
HANDLER_MS = 50.0


def sagas_of(runs: int) -> tuple[int, int]:
    return runs, FIVE.steps_of(runs)


def definitions_dir() -> str:
    directory = tempfile.mkdtemp(prefix="concordia-scale-")
    with open(os.path.join(directory, "bench5.yaml"), "w", encoding="utf-8") as fh:
        fh.write(FIVE.yaml())
    return directory


def pg_schema_url(schema: str) -> str:
    return f"{PG}?schema={schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- measuring a pass ----------------------------------------------------------------------


@dataclass
class Cost:
    """What one timed pass took: wall seconds, this process's CPU seconds, and (on
    PostgreSQL) the serving backends' CPU seconds and the WAL bytes written."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    db_cpu_s: float | None = None
    wal_bytes: int | None = None


@dataclass
class Meter:
    """Times a pass and reads its costs (see :class:`Cost`); ``app`` names the measured
    connections (PostgreSQL)."""

    db: str
    app: str = field(default_factory=lambda: f"cbench-{uuid.uuid4().hex[:8]}")
    cost: Cost = field(default_factory=Cost)

    def url(self, url: str) -> str:
        return with_app(url, self.app) if self.db == "postgresql" else url

    def begin(self) -> None:
        if self.db == "postgresql":
            self.server = ServerCpu([self.app])
            self.server.begin()
            self.lsn = wal_lsn()
        self.cpu = time.process_time()
        self.began = time.perf_counter()

    def end(self) -> Cost:
        self.cost.seconds = time.perf_counter() - self.began
        self.cost.cpu_s = time.process_time() - self.cpu
        if self.db == "postgresql":
            self.server.sample()
            self.cost.wal_bytes = wal_lsn() - self.lsn
            self.cost.db_cpu_s = self.server.seconds()
        return self.cost


# -- Concordia in this process -------------------------------------------------------------------


def concordia_pass(db: str, concurrency: int, runs: int, tmp: str,
                   proxy: RoundTrips | None = None) -> Cost:
    """The costs of ``runs`` sagas on a fresh store, after a warm-up (``proxy``: through
    the round-trip counter)."""
    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.runtime.aengine import AsyncEngine
    from concordia.runtime.engine import Engine
    from concordia.status import RunStatus

    meter = Meter(db)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = meter.url(pg_schema_url(schema) if db == "postgresql"
                    else f"sqlite:///{os.path.join(tmp, uuid.uuid4().hex + '.db')}")
    if proxy is not None:
        url = proxy.url(url)
    catalog = Catalog.load_strict([definitions_dir()])

    def sequential() -> Cost:
        with Engine(catalog, registry(FIVE), url, clock=SystemClock()) as engine:
            drive_sync(engine, FIVE, 20)
            meter.begin()
            drive_sync(engine, FIVE, runs, 20)
            cost = meter.end()
            check(engine.store, FIVE, runs + 20)
            return cost

    async def main() -> Cost:
        async with AsyncEngine(catalog, registry(FIVE), url, clock=SystemClock(),
                               claim_new_runs=True) as engine:
            await drive_async(engine, FIVE, 20, concurrency)
            meter.begin()
            await drive_async(engine, FIVE, runs, concurrency)
            cost = meter.end()
            statuses = [r.status for r in await engine.list_runs(limit=runs + 100)]
            ended = statuses.count(RunStatus.COMPLETED) + statuses.count(RunStatus.COMPENSATED)
            if ended != runs + 20:
                raise SystemExit(f"benchmark runs ended wrongly on {db}")
            return cost

    try:
        return sequential() if concurrency == 1 else asyncio.run(main())
    finally:
        if db == "postgresql":
            drop_schema(schema)


# -- the raw floor ---------------------------------------------------------------------------


class PgJournal:
    """A hand-written journal on PostgreSQL: one row and one commit per step, each commit
    one ``INSERT`` in autocommit (one round trip, as cheap as a durable write gets)."""

    def __init__(self, schema: str, url: str = PG) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f'CREATE SCHEMA "{schema}"')
        self.conn.execute(f'SET search_path = "{schema}"')
        self.conn.execute("CREATE TABLE journal (seq BIGINT GENERATED ALWAYS AS IDENTITY "
                          "PRIMARY KEY, run_id TEXT NOT NULL, step TEXT NOT NULL, "
                          "outcome TEXT NOT NULL, result TEXT)")

    def __call__(self, run_id: str, step: str, outcome: str, result: Any) -> None:
        self.conn.execute("INSERT INTO journal (run_id, step, outcome, result) VALUES "
                          "(%s, %s, %s, %s)", (run_id, step, outcome, json.dumps(result)))

    def close(self) -> None:
        self.conn.close()


def floor_pass(db: str, runs: int, tmp: str, *, create: bool = False,
               proxy: RoundTrips | None = None) -> tuple[Cost, int]:
    """The raw journal's costs for ``runs`` sagas, and the commits it made (``create``:
    each run's creation committed too, the N+1 commits)."""
    meter = Meter(db)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = meter.url(PG) if proxy is None else proxy.url(meter.url(PG))
    journal: Any = (PgJournal(schema, url) if db == "postgresql"
                    else RawJournal(os.path.join(tmp, uuid.uuid4().hex + ".db")))
    try:
        plain_calls(FIVE, 20, journal, create=create)
        meter.begin()
        steps = plain_calls(FIVE, runs, journal, create=create)
        return meter.end(), steps + (runs if create else 0)
    finally:
        journal.close()
        if db == "postgresql":
            drop_schema(schema)


# -- DBOS, in a process of its own ----------------------------------------------------------


def dbos_child(db_url: str, concurrency: int, runs: int) -> None:
    """Run the saga under DBOS and print one JSON line: seconds, CPU seconds, peak RSS."""
    import logging

    from dbos import DBOS

    logging.disable(logging.INFO)
    DBOS(config={"name": "concordia-bench", "system_database_url": db_url,
                 "run_admin_server": False})

    @DBOS.step()  # type: ignore[untyped-decorator]  # (DBOS is optional)
    def act(name: str, failing: bool) -> dict[str, Any]:
        if failing:
            raise RuntimeError(f"{name} refused")
        return {"step": name}

    @DBOS.step()  # type: ignore[untyped-decorator]  # (DBOS is optional)
    def undo(name: str) -> None:
        return None

    @DBOS.workflow()  # type: ignore[untyped-decorator]  # (DBOS is optional)
    def saga(fail: bool) -> str:
        done: list[str] = []
        for i, name in enumerate(FIVE.steps):
            try:
                act(name, fail and i == FIVE.failing)
            except RuntimeError:
                for prior in reversed(done):
                    undo(prior)
                return "compensated"
            done.append(name)
        return "completed"

    DBOS.launch()

    def batch(n: int, offset: int) -> float:
        began = time.perf_counter()
        if concurrency == 1:
            for i in range(offset, offset + n):
                saga(fails(i))
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda i: saga(fails(i)), range(offset, offset + n)))
        return time.perf_counter() - began

    batch(20, 0)
    cpu = time.process_time()
    seconds = batch(runs, 20)
    cpu = time.process_time() - cpu
    DBOS.destroy()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "peak_rss_mb": rss}))


def dbos_available() -> str | None:
    """None if DBOS can run here, else why not."""
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        return f"not measured: the dbos package is not installed ({exc.name}); " \
               "pip install '.[bench]'"
    return None


def dbos_pass(db: str, concurrency: int, runs: int, tmp: str) -> dict[str, float]:
    import psycopg

    if db == "postgresql":
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DBOS_DB}"')
            conn.execute(f'CREATE DATABASE "{DBOS_DB}"')
        url = f"postgresql://127.0.0.1:5432/{DBOS_DB}"
    else:
        url = f"sqlite:///{os.path.join(tmp, uuid.uuid4().hex + '-dbos.db')}"
    try:
        out = subprocess.run([sys.executable, __file__, "--child-dbos", url, str(concurrency),
                              str(runs)], capture_output=True, text=True, timeout=900,
                             check=False)
    finally:
        if db == "postgresql":
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DBOS_DB}" WITH (FORCE)')
    if out.returncode != 0:
        raise RuntimeError(f"DBOS failed: {out.stderr[-2000:]}")
    found: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


# -- worker processes on PostgreSQL ------------------------------------------------------------


@dataclass
class WorkersCost:
    """One worker-process pass: wall seconds, the workers' CPU seconds (together), the
    largest peak RSS, the server's CPU seconds and WAL bytes."""

    seconds: float
    cpu_s: float
    rss_mb: float
    db_cpu_s: float
    wal_bytes: int


def workers_pass(workers: int, concurrency: int, handler_ms: float, runs: int,
                 proxy: RoundTrips | None = None) -> WorkersCost:
    """``workers`` processes end ``runs`` runs made beforehand (``proxy``: their
    connections through the round-trip counter)."""
    import psycopg

    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.runtime.engine import Engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    app = f"cbench-{uuid.uuid4().hex[:8]}"
    url = with_app(pg_schema_url(schema), app)
    definitions = definitions_dir()
    with Engine(Catalog.load_strict([definitions]), registry(FIVE), pg_schema_url(schema),
                clock=SystemClock(), claim_new_runs=False) as engine:
        for i in range(runs):
            engine.start(FIVE.name, {"fail": fails(i)})
    worker_url = url if proxy is None else proxy.url(url)
    procs = [subprocess.Popen([sys.executable, __file__, "--child-worker", worker_url,
                               definitions, str(concurrency), str(handler_ms)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        server = ServerCpu([app])
        with psycopg.connect(PG, autocommit=True) as conn:
            count = f"SELECT count(*) FROM \"{schema}\".runs WHERE status IN " \
                    "('completed', 'compensated')"
            cpu = sum(process_cpu_s(p.pid) for p in procs)
            lsn = wal_lsn()
            began = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            polled = began
            while (row := conn.execute(count).fetchone()) is not None and row[0] < runs:
                now = time.perf_counter()
                if now - began > 600:
                    raise SystemExit("workers did not finish within 600 s")
                if now - polled > 0.5:  # backends seen early count from their start
                    server.sample()
                    polled = now
                time.sleep(0.01)
            took = time.perf_counter() - began
            server.sample()
            wal = wal_lsn() - lsn
            cpu = sum(process_cpu_s(p.pid) for p in procs) - cpu
        rss = max(peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        drop_schema(schema)
    return WorkersCost(took, cpu, rss, server.seconds(), wal)


# -- the report --------------------------------------------------------------------------------


def interleaved(repeat: int, passes: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Each pass ``repeat`` times, in turn; every result kept."""
    found: dict[str, list[Any]] = {name: [] for name in passes}
    for _ in range(repeat):
        for name, run in passes.items():
            found[name].append(run())
    return found


def per(value: float | None, count: float, scale: float = 1e6) -> float | None:
    return None if value is None else round(value / count * scale, 1)


def least(values: Iterable[float | None]) -> float | None:
    """The smallest of figures a pass measures only on PostgreSQL (None when one is not
    measured)."""
    known = list(values)
    return None if None in known else min(v for v in known if v is not None)


def round_trips(db: str, concurrency: int, runs: int, tmp: str
                ) -> tuple[float, float, float]:
    """Round trips per step and per commit (N+1 a saga) of Concordia, and per commit of
    the raw journal, each over a pass of its own through the counting proxy."""
    with RoundTrips() as proxy:
        concordia_pass(db, concurrency, runs, tmp, proxy=proxy)
        ours = proxy.count
    with RoundTrips() as proxy:
        _, commits = floor_pass(db, runs, tmp, proxy=proxy)
        floor = proxy.count
    # The warm-up's runs and the connections' opening are counted too: a pass of 20 more
    # runs is the difference that remains per step.
    with RoundTrips() as proxy:
        concordia_pass(db, concurrency, runs + 40, tmp, proxy=proxy)
        more = proxy.count
    with RoundTrips() as proxy:
        _, more_commits = floor_pass(db, runs + 40, tmp, proxy=proxy)
        floor_more = proxy.count
    steps = FIVE.steps_of(runs + 40) - FIVE.steps_of(runs)
    return (round((more - ours) / steps, 2), round((more - ours) / (steps + 40), 2),
            round((floor_more - floor) / (more_commits - commits), 2))


def in_process_row(db: str, concurrency: int, args: argparse.Namespace, tmp: str,
                   why_no_dbos: str | None) -> dict[str, Any]:
    passes: dict[str, Callable[[], Any]] = {
        "concordia": lambda: concordia_pass(db, concurrency, args.runs, tmp),
        "floor": lambda: floor_pass(db, args.runs, tmp),
        "same_commits": lambda: floor_pass(db, args.runs, tmp, create=True)}
    if why_no_dbos is None:
        passes["dbos"] = lambda: dbos_pass(db, concurrency, args.dbos_runs, tmp)
    found = interleaved(args.repeat, passes)
    sagas, steps = sagas_of(args.runs)
    ours: list[Cost] = found["concordia"]
    t = min(c.seconds for c in ours)
    floor_t = min(c.seconds for c, _ in found["floor"])
    commits = found["floor"][0][1]
    same_t = min(c.seconds for c, _ in found["same_commits"])
    row: dict[str, Any] = {
        "db": db, "concurrency": concurrency, "workers": 1, "handler_ms": 0,
        "sagas_per_s": round(sagas / t, 1), "steps_per_s": round(steps / t),
        "floor_sagas_per_s": round(args.runs / floor_t, 1),
        "same_commits_floor_sagas_per_s": round(args.runs / same_t, 1),
        "ratio_to_same_commits_floor": round(same_t / t, 3),
        "ratio_to_floor": round(floor_t / t, 3),
        "dbos_sagas_per_s": why_no_dbos, "runs": args.runs,
        "worker_cpu_us_per_step": per(min(c.cpu_s for c in ours), steps),
        "floor_cpu_us_per_commit": per(min(c.cpu_s for c, _ in found["floor"]), commits),
        "peak_rss_mb": None}
    if db == "postgresql":
        row["db_cpu_us_per_step"] = per(least(c.db_cpu_s for c in ours), steps)
        row["floor_db_cpu_us_per_commit"] = per(
            min(c.db_cpu_s for c, _ in found["floor"]), commits)
        row["wal_bytes_per_step"] = per(least(c.wal_bytes for c in ours), steps, 1)
        row["floor_wal_bytes_per_commit"] = per(
            min(c.wal_bytes for c, _ in found["floor"]), commits, 1)
        (row["round_trips_per_step"], row["round_trips_per_commit"],
         row["floor_round_trips_per_commit"]) = round_trips(db, concurrency,
                                                            max(20, args.runs // 5), tmp)
    if "dbos" in found:
        dbos = found["dbos"]
        dbos_steps = FIVE.steps_of(args.dbos_runs)
        dbos_rate = args.dbos_runs / min(d["seconds"] for d in dbos)
        row["dbos_sagas_per_s"] = round(dbos_rate, 1)
        row["ratio_to_dbos"] = round(sagas / t / dbos_rate, 2)
        row["dbos_cpu_us_per_step"] = per(min(d["cpu_s"] for d in dbos), dbos_steps)
        row["dbos_peak_rss_mb"] = round(max(d["peak_rss_mb"] for d in dbos), 1)
    return row


def workers_row(workers: int, concurrency: int, handler_ms: float, args: argparse.Namespace
                ) -> dict[str, Any]:
    runs = args.worker_runs if handler_ms == 0 else args.slow_runs
    found = [workers_pass(workers, concurrency, handler_ms, runs) for _ in range(args.repeat)]
    steps = FIVE.steps_of(runs)
    t = min(c.seconds for c in found)
    row: dict[str, Any] = {
        "db": "postgresql", "concurrency": concurrency, "workers": workers,
        "handler_ms": handler_ms, "sagas_per_s": round(runs / t, 1),
        "steps_per_s": round(steps / t), "floor_sagas_per_s": None,
        "dbos_sagas_per_s": None, "runs": runs,
        "worker_cpu_us_per_step": per(min(c.cpu_s for c in found), steps),
        "db_cpu_us_per_step": per(min(c.db_cpu_s for c in found), steps),
        "wal_bytes_per_step": per(min(c.wal_bytes for c in found), steps, 1),
        "peak_rss_mb": round(max(c.rss_mb for c in found), 1)}
    if workers == 1 and handler_ms == 0:
        small = max(100, runs // 5)
        with RoundTrips() as proxy:
            workers_pass(1, concurrency, 0, small, proxy)
            few = proxy.count
        with RoundTrips() as proxy:
            workers_pass(1, concurrency, 0, small * 2, proxy)
            more = proxy.count
        row["round_trips_per_step"] = round(
            (more - few) / (FIVE.steps_of(small * 2) - FIVE.steps_of(small)), 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="sagas per Concordia pass")
    parser.add_argument("--dbos-runs", type=int, default=100, help="sagas per DBOS pass")
    parser.add_argument("--worker-runs", type=int, default=1500,
                        help="sagas per worker-process pass (handlers that return at once)")
    parser.add_argument("--slow-runs", type=int, default=1200,
                        help=f"sagas per worker-process pass with {HANDLER_MS:g} ms handlers")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small passes, one of each")
    parser.add_argument("--no-dbos", action="store_true", help="leave the DBOS column out")
    parser.add_argument("--only", choices=("in-process", "workers"),
                        help="only these rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.dbos_runs, args.worker_runs, args.slow_runs, args.repeat = \
            100, 40, 400, 400, 1
    why_no_dbos = "not measured: --no-dbos" if args.no_dbos else dbos_available()
    tmp = tempfile.mkdtemp(prefix="concordia-scale-")
    rows: list[dict[str, Any]] = []
    if args.only != "workers":
        for db, levels in (("sqlite", (1, 8, 16)), ("postgresql", (1, 8))):
            for concurrency in levels:
                rows.append(in_process_row(db, concurrency, args, tmp, why_no_dbos))
                print(f"  measured {db} x{concurrency}", file=sys.stderr)
    if args.only != "in-process":
        for workers, concurrency, handler_ms in ((1, 8, 0), (2, 8, 0), (1, 16, HANDLER_MS),
                                                 (2, 16, HANDLER_MS), (4, 16, HANDLER_MS)):
            rows.append(workers_row(workers, concurrency, handler_ms, args))
            print(f"  measured {workers} worker process(es), {handler_ms:g} ms handlers",
                  file=sys.stderr)
    report(rows)
    return 0


def _cell(value: Any, width: int) -> str:
    if value is None or isinstance(value, str):
        return f"{'-':>{width}}"
    return f"{value:>{width}}"


_COLUMNS = (("db", "db", 11), ("concurrency", "conc", 5), ("workers", "wkrs", 5),
            ("handler_ms", "h ms", 5), ("sagas_per_s", "sagas/s", 9),
            ("ratio_to_same_commits_floor", "xN+1", 6), ("ratio_to_dbos", "xDBOS", 6),
            ("worker_cpu_us_per_step", "cpu µs", 7), ("dbos_cpu_us_per_step", "DBOS", 7),
            ("db_cpu_us_per_step", "db µs", 6), ("floor_db_cpu_us_per_commit", "floor", 6),
            ("wal_bytes_per_step", "WAL B", 6), ("floor_wal_bytes_per_commit", "floor", 6),
            ("round_trips_per_step", "RT", 5), ("peak_rss_mb", "RSS", 6),
            ("dbos_peak_rss_mb", "DBOS", 6))


def report(rows: list[dict[str, Any]]) -> None:
    print("".join(f"{title:>{w}}" if i else f"{title:<{w}}"
                  for i, (_, title, w) in enumerate(_COLUMNS)))
    for r in rows:
        print("".join(f"{r['db']:<{w}}" if i == 0 else _cell(r.get(k), w)
                      for i, (k, _, w) in enumerate(_COLUMNS)))
    for r in rows:
        if isinstance(r["dbos_sagas_per_s"], str):
            print(f"DBOS column: {r['dbos_sagas_per_s']}")
            break
    print("targets:")
    for line, ok in targets(rows):
        print(f"  {line} — {'met' if ok else 'NOT met'}")
    for r in rows:
        print(json.dumps(r))


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Each target as a line and whether it is met."""
    out: list[tuple[str, bool]] = []

    def find(db: str, concurrency: int, workers: int = 1, handler_ms: float = 0
             ) -> dict[str, Any] | None:
        return next((r for r in rows if (r["db"], r["concurrency"], r["workers"],
                                         r["handler_ms"]) == (db, concurrency, workers,
                                                              handler_ms)), None)

    seq, flight = find("postgresql", 1), find("postgresql", 8)
    if seq is not None and flight is not None:
        ratio = seq["ratio_to_same_commits_floor"]
        out.append((f"PostgreSQL x1 >= {SAME_COMMITS_TARGET} of the same-commits floor: "
                    f"{ratio}", ratio >= SAME_COMMITS_TARGET))
        x = flight["sagas_per_s"] / seq["floor_sagas_per_s"]
        out.append((f"PostgreSQL x8 >= {IN_FLIGHT_TARGET}x the sequential one-commit floor: "
                    f"{x:.2f}x", x >= IN_FLIGHT_TARGET))
        for r in (seq, flight):
            cpu = r["db_cpu_us_per_step"] / r["floor_db_cpu_us_per_commit"]
            out.append((f"PostgreSQL x{r['concurrency']} server CPU per step <= "
                        f"{DB_CPU_TARGET}x the floor's per commit: {cpu:.2f}x",
                        cpu <= DB_CPU_TARGET))
            wal = r["wal_bytes_per_step"] / r["floor_wal_bytes_per_commit"]
            out.append((f"PostgreSQL x{r['concurrency']} WAL per step <= {WAL_TARGET}x the "
                        f"floor's per commit: {wal:.2f}x", wal <= WAL_TARGET))
            out.append((f"PostgreSQL x{r['concurrency']} one round trip per step (per commit, "
                        f"N+1 a saga: {r['round_trips_per_commit']}): "
                        f"{r['round_trips_per_step']}", r["round_trips_per_commit"] <= 1.0))
    for r in rows:
        if "ratio_to_dbos" in r:
            out.append((f"{r['db']} x{r['concurrency']} >= {DBOS_TARGET:g}x DBOS: "
                        f"{r['ratio_to_dbos']}x", r["ratio_to_dbos"] >= DBOS_TARGET))
        if r.get("dbos_cpu_us_per_step"):
            x = r["worker_cpu_us_per_step"] / r["dbos_cpu_us_per_step"]
            out.append((f"{r['db']} x{r['concurrency']} CPU per step <= "
                        f"{CPU_TO_DBOS_TARGET}x DBOS's: {x:.3f}x", x <= CPU_TO_DBOS_TARGET))
    flight16 = find("sqlite", 16)
    if flight16 is not None:
        x = flight16["worker_cpu_us_per_step"] / flight16["floor_cpu_us_per_commit"]
        out.append((f"SQLite x16 CPU per step <= {SQLITE_CPU_TARGET:g}x the raw journal's "
                    f"per commit: {x:.2f}x", x <= SQLITE_CPU_TARGET))
    one = find("postgresql", 16, 1, HANDLER_MS)
    for n, want in WORKERS_TARGETS.items():
        many = find("postgresql", 16, n, HANDLER_MS)
        if one is not None and many is not None:
            x = many["sagas_per_s"] / one["sagas_per_s"]
            out.append((f"{n} workers >= {want}x one ({HANDLER_MS:g} ms handlers, 16 in "
                        f"flight each): {x:.2f}x", x >= want))
    rss = [r["peak_rss_mb"] for r in rows if r["peak_rss_mb"] is not None]
    dbos_rss = [r["dbos_peak_rss_mb"] for r in rows if r.get("dbos_peak_rss_mb")]
    if rss:
        out.append((f"a worker's peak RSS < {RSS_TARGET_MB:g} MB: {max(rss)} MB",
                    max(rss) < RSS_TARGET_MB))
        if dbos_rss:
            out.append((f"a worker's peak RSS below DBOS's ({min(dbos_rss)} MB): "
                        f"{max(rss)} MB", max(rss) < min(dbos_rss)))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-dbos":
        dbos_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(main())
