"""Scale-out figures: SQLite and PostgreSQL, one run at a time and 8 in flight, one and two
worker processes, next to a raw journal floor and DBOS on the same database.

    .venv/bin/python bench/scale.py [--runs N] [--repeat K] [--quick] [--no-dbos]

The saga is bench/engine.py's 5-step one (every fifth run fails for good at step 4, so
three steps are compensated): 5.4 handler calls per saga on average.

Rows (the ``db``, ``concurrency`` and ``workers`` fields):

- db sqlite|postgresql, workers 1, concurrency 1 and 8: an engine in this process starts
  and drives each run and claims the runs it starts, as an engine that drives its own runs
  does: one run at a time on the sync engine (the driver made for that: no thread hand-off
  per write), 8 at once on the async engine (8 clients; the writes of runs in flight share
  transactions). ``floor_sagas_per_s`` is a raw
  journal on the same database committing once per step, one run at a time (psycopg or
  sqlite3, no engine). ``dbos_sagas_per_s`` is DBOS running the same saga (each step a
  ``@DBOS.step``, the compensations steps too, in a ``@DBOS.workflow``) on the same
  database, ``concurrency`` workflows at once, in a process of its own; when the optional
  ``dbos`` package is missing (``pip install '.[bench]'``) the column says why.
- db postgresql, workers 1 and 2, concurrency 8: ``concordia``-style worker processes
  (``AsyncEngine.work(concurrency=8)``) share runs created beforehand; sagas/s from the
  go signal until every run ended. ``peak_rss_mb`` is the largest worker's peak resident
  set (VmHWM).

Each figure is the best of ``--repeat`` interleaved passes (Concordia, floor and DBOS in
turn) after a warm-up. The table comes first, then one JSON object per line per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (os.path.join(ROOT, "engine"), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)



def worker_registry() -> Any:
    """The 5-step saga's handlers (as bench/engine.py's), built without importing that
    module: it loads the SQLite store, which a PostgreSQL worker does not, and the worker's
    resident memory is one of the figures."""
    from concordia.errors import PermanentError
    from concordia.registry import Registry

    registry = Registry()
    for i in range(5):
        def act(ctx: Any, name: str = f"s{i}", failing: bool = i == 3) -> Any:
            if failing and ctx.input["fail"]:
                raise PermanentError(f"{name} refused")
            return {"step": name, "ref": ctx.idempotency_key}

        registry.add_action(f"bench.s{i}", act)
        registry.add_compensation(f"bench.undo_s{i}", lambda ctx: None)
    return registry


def worker_child(url: str, definitions: str, concurrency: int) -> None:
    """A worker: says ready, waits for go, works until SIGTERM."""
    import signal

    from concordia.definitions.catalog import Catalog
    from concordia.runtime.aengine import AsyncEngine

    engine = AsyncEngine(Catalog.load_strict([definitions]), worker_registry(), url)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, engine.stop)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        async with engine:
            await engine.work(concurrency=concurrency, poll_interval=0.2)

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:2] == ["--child-worker"]:
    worker_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    raise SystemExit(0)

from events import peak_rss_mb  # noqa: E402

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

PG = "postgresql://127.0.0.1:5432/test"
DBOS_DB = "concordia_bench_dbos"
DBOS_TARGET = 5.0
WORKERS_TARGET = 1.6
RSS_TARGET_MB = 60.0


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


# -- Concordia in this process -------------------------------------------------------------------


def concordia_pass(db: str, concurrency: int, runs: int, tmp: str) -> float:
    """Seconds for ``runs`` sagas on a fresh store, after a warm-up."""
    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.runtime.aengine import AsyncEngine
    from concordia.runtime.engine import Engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = (pg_schema_url(schema) if db == "postgresql"
           else f"sqlite:///{os.path.join(tmp, uuid.uuid4().hex + '.db')}")
    catalog = Catalog.load_strict([definitions_dir()])

    def sequential() -> float:
        with Engine(catalog, registry(FIVE), url, clock=SystemClock()) as engine:
            drive_sync(engine, FIVE, 20)
            began = time.perf_counter()
            drive_sync(engine, FIVE, runs, 20)
            took = time.perf_counter() - began
            check(engine.store, FIVE, runs + 20)
            return took

    async def main() -> float:
        async with AsyncEngine(catalog, registry(FIVE), url, clock=SystemClock(),
                               claim_new_runs=True) as engine:
            await drive_async(engine, FIVE, 20, concurrency)
            began = time.perf_counter()
            await drive_async(engine, FIVE, runs, concurrency)
            took = time.perf_counter() - began
            statuses = [r.status for r in await engine.list_runs(limit=runs + 100)]
            if statuses.count("completed") + statuses.count("compensated") != runs + 20:
                raise SystemExit(f"benchmark runs ended wrongly on {db}")
            return took

    try:
        return sequential() if concurrency == 1 else asyncio.run(main())
    finally:
        if db == "postgresql":
            drop_schema(schema)


# -- the raw floor ---------------------------------------------------------------------------


class PgJournal:
    """A hand-written journal on PostgreSQL: one row and one commit per step."""

    def __init__(self, schema: str) -> None:
        import psycopg

        self.conn = psycopg.connect(PG, autocommit=True)
        self.conn.execute(f'CREATE SCHEMA "{schema}"')
        self.conn.execute(f'SET search_path = "{schema}"')
        self.conn.execute("CREATE TABLE journal (seq BIGINT GENERATED ALWAYS AS IDENTITY "
                          "PRIMARY KEY, run_id TEXT NOT NULL, step TEXT NOT NULL, "
                          "outcome TEXT NOT NULL, result TEXT)")

    def __call__(self, run_id: str, step: str, outcome: str, result: Any) -> None:
        with self.conn.transaction():
            self.conn.execute("INSERT INTO journal (run_id, step, outcome, result) VALUES "
                              "(%s, %s, %s, %s)", (run_id, step, outcome, json.dumps(result)))

    def close(self) -> None:
        self.conn.close()


def floor_pass(db: str, runs: int, tmp: str) -> float:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    journal: Any = (PgJournal(schema) if db == "postgresql"
                    else RawJournal(os.path.join(tmp, uuid.uuid4().hex + ".db")))
    try:
        plain_calls(FIVE, 20, journal)
        began = time.perf_counter()
        plain_calls(FIVE, runs, journal)
        return time.perf_counter() - began
    finally:
        journal.close()
        if db == "postgresql":
            drop_schema(schema)


# -- DBOS, in a process of its own ----------------------------------------------------------


def dbos_child(db_url: str, concurrency: int, runs: int) -> None:
    """Run the saga under DBOS and print one JSON line: {"seconds": ...}."""
    import logging

    from dbos import DBOS

    logging.disable(logging.INFO)
    DBOS(config={"name": "concordia-bench", "system_database_url": db_url,
                 "run_admin_server": False})

    @DBOS.step()
    def act(name: str, failing: bool) -> dict[str, Any]:
        if failing:
            raise RuntimeError(f"{name} refused")
        return {"step": name}

    @DBOS.step()
    def undo(name: str) -> None:
        return None

    @DBOS.workflow()
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
    seconds = batch(runs, 20)
    DBOS.destroy()
    print(json.dumps({"seconds": seconds}))


def dbos_available() -> str | None:
    """None if DBOS can run here, else why not."""
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        return f"not measured: the dbos package is not installed ({exc.name}); " \
               "pip install '.[bench]'"
    return None


def dbos_pass(db: str, concurrency: int, runs: int, tmp: str) -> float:
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
                conn.execute(f'DROP DATABASE IF EXISTS "{DBOS_DB}"')
    if out.returncode != 0:
        raise RuntimeError(f"DBOS failed: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


# -- worker processes on PostgreSQL ------------------------------------------------------------


def workers_pass(workers: int, runs: int) -> tuple[float, float]:
    """Seconds for ``workers`` processes to end ``runs`` runs made beforehand; peak RSS."""
    import psycopg

    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.runtime.engine import Engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = pg_schema_url(schema)
    definitions = definitions_dir()
    with Engine(Catalog.load_strict([definitions]), registry(FIVE), url, clock=SystemClock(),
                claim_new_runs=False) as engine:
        for i in range(runs):
            engine.start(FIVE.name, {"fail": fails(i)})
    procs = [subprocess.Popen([sys.executable, __file__, "--child-worker", url, definitions,
                               "8"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        with psycopg.connect(PG, autocommit=True) as conn:
            count = f"SELECT count(*) FROM \"{schema}\".runs WHERE status IN " \
                    "('completed', 'compensated')"
            began = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            while (row := conn.execute(count).fetchone()) is not None and row[0] < runs:
                if time.perf_counter() - began > 600:
                    raise SystemExit("workers did not finish within 600 s")
                time.sleep(0.01)
            took = time.perf_counter() - began
        rss = max(peak_rss_mb(p.pid) for p in procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        drop_schema(schema)
    return took, rss


# -- the report --------------------------------------------------------------------------------


def best(repeat: int, passes: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The fastest of ``repeat`` interleaved passes of each."""
    found: dict[str, float] = {}
    for _ in range(repeat):
        for name, run in passes.items():
            seconds = run()
            found[name] = min(found.get(name, seconds), seconds)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="sagas per Concordia pass")
    parser.add_argument("--dbos-runs", type=int, default=100, help="sagas per DBOS pass")
    parser.add_argument("--worker-runs", type=int, default=1500,
                        help="sagas per worker-process pass")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small passes, one of each")
    parser.add_argument("--no-dbos", action="store_true", help="leave the DBOS column out")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.dbos_runs, args.worker_runs, args.repeat = 100, 40, 400, 1
    why_no_dbos = "not measured: --no-dbos" if args.no_dbos else dbos_available()
    tmp = tempfile.mkdtemp(prefix="concordia-scale-")
    rows: list[dict[str, Any]] = []
    for db in ("sqlite", "postgresql"):
        for concurrency in (1, 8):
            passes: dict[str, Callable[[], float]] = {
                "concordia": lambda db=db, c=concurrency: concordia_pass(db, c, args.runs, tmp),
                "floor": lambda db=db: floor_pass(db, args.runs, tmp)}
            if why_no_dbos is None:
                passes["dbos"] = lambda db=db, c=concurrency: dbos_pass(db, c, args.dbos_runs,
                                                                        tmp)
            found = best(args.repeat, passes)
            sagas, steps = sagas_of(args.runs)
            rate = sagas / found["concordia"]
            row: dict[str, Any] = {
                "db": db, "concurrency": concurrency, "workers": 1,
                "sagas_per_s": round(rate, 1), "steps_per_s": round(steps / found["concordia"]),
                "floor_sagas_per_s": round(args.runs / found["floor"], 1),
                "dbos_sagas_per_s": (round(args.dbos_runs / found["dbos"], 1)
                                     if "dbos" in found else why_no_dbos),
                "peak_rss_mb": None, "runs": args.runs}
            if "dbos" in found:
                row["ratio_to_dbos"] = round(rate / (args.dbos_runs / found["dbos"]), 2)
            rows.append(row)
            print(f"  measured {db} x{concurrency}", file=sys.stderr)
    for workers in (1, 2):
        took, rss = min((workers_pass(workers, args.worker_runs) for _ in range(args.repeat)),
                        key=lambda r: r[0])
        rows.append({"db": "postgresql", "concurrency": 8, "workers": workers,
                     "sagas_per_s": round(args.worker_runs / took, 1),
                     "steps_per_s": round(FIVE.steps_of(args.worker_runs) / took),
                     "floor_sagas_per_s": None, "dbos_sagas_per_s": None,
                     "peak_rss_mb": round(rss, 1), "runs": args.worker_runs})
        print(f"  measured {workers} worker process(es)", file=sys.stderr)
    report(rows)
    return 0


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'db':<11}{'conc':>5}{'workers':>8}{'sagas/s':>9}{'steps/s':>9}{'floor':>8}"
          f"{'DBOS':>8}{'xDBOS':>7}{'RSS MB':>8}")
    for r in rows:
        dbos = r["dbos_sagas_per_s"]
        print(f"{r['db']:<11}{r['concurrency']:>5}{r['workers']:>8}{r['sagas_per_s']:>9}"
              f"{r['steps_per_s']:>9}{r['floor_sagas_per_s'] or '':>8}"
              f"{dbos if isinstance(dbos, float) else '-':>8}"
              f"{r.get('ratio_to_dbos', ''):>7}{r['peak_rss_mb'] or '':>8}")
    for r in rows:
        if isinstance(r["dbos_sagas_per_s"], str):
            print(f"DBOS column: {r['dbos_sagas_per_s']}")
            break
    print("targets:")
    for r in rows:
        if "ratio_to_dbos" in r:
            ok = r["ratio_to_dbos"] >= DBOS_TARGET
            print(f"  {r['db']} x{r['concurrency']}: >= {DBOS_TARGET:g}x DBOS: "
                  f"{r['ratio_to_dbos']}x — {'met' if ok else 'NOT met'}")
    one = next(r for r in rows if r["workers"] == 1 and r["peak_rss_mb"] is not None)
    two = next(r for r in rows if r["workers"] == 2)
    ratio = two["sagas_per_s"] / one["sagas_per_s"]
    print(f"  2 workers >= {WORKERS_TARGET:g}x one on PostgreSQL: {ratio:.2f}x — "
          f"{'met' if ratio >= WORKERS_TARGET else 'NOT met'}")
    rss = max(r["peak_rss_mb"] for r in rows if r["peak_rss_mb"] is not None)
    print(f"  peak RSS of a worker < {RSS_TARGET_MB:g} MB: {rss} MB — "
          f"{'met' if rss < RSS_TARGET_MB else 'NOT met'}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-dbos":
        dbos_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(main())
