"""Benchmark: what suspended runs cost a worker, and how fast matching events resume them.

A small saga (one action, then an ``await`` whose match is indexable: the event's job id
equals the action's result) is started N times with the engine (``start`` +
``run_until_idle``), so N runs are suspended in a SQLite file (WAL, ``synchronous=FULL``).
Then, for each configuration, on a fresh copy of that file:

* a **baseline worker** (a fresh process) imports Concordia, opens an engine on an *empty*
  store, makes one pass and delivers one event that matches nothing, and reports its RSS;
* a **worker** (a fresh process) does exactly the same on the store holding the N
  suspended runs and reports its RSS: the difference is ``added_rss_mb``, what the
  suspended runs cost a process that serves them (nothing in memory waits for them);
* the same worker then delivers the N matching events (shuffled; as dicts, as a broker
  consumer would) — batched with ``Engine.deliver_many`` or one ``deliver`` each — with a
  ``run_until_idle`` pass every batch, until every run has completed: ``resumes_per_s``
  (the time spent in the engine; envelopes are built a batch at a time, outside it).

The run creation rate and the creating process's own RSS growth are reported too.
Every run is checked to have completed, once, when the worker is done.

Prints a table, then one JSON object per line per configuration (``suspended_runs``,
``added_rss_mb``, ``resumes_per_s``, ``store``, ...). Targets: under 50 MB added, at
least 1,000 resumes per second on SQLite.

    .venv/bin/python bench/events.py [--n 100000] [--modes batched,single] [--batch 256]
                                     [--db PATH]   # reuse (or keep) the prepared store
    .venv/bin/python bench/events.py --store memory --n 20000   # everything in one process
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_MB = 50.0
TARGET_RESUMES_PER_S = 1000.0

EVENTS = """
events:
  - name: bench.job.finished
    version: 1
    reliability: persistent
    payload_schema:
      job_id: {type: string, required: true}
      score: {type: number, required: true}
"""

SAGA = """
name: bench_wait
version: 1
input_schema:
  n: {type: integer, required: true}
steps:
  - name: submit
    action: bench.submit
    compensate: bench.cancel
  - name: wait_done
    await: bench.job.finished
    match: event.data.job_id == results.submit.job_id
    timeout: 24h
"""


# -- measuring -----------------------------------------------------------------------------

def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, after a collection."""
    gc.collect()
    current = peak = None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    if peak is None:  # not Linux: ru_maxrss is KB on Linux, bytes on macOS
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = raw / (1024 * 1024) if sys.platform == "darwin" else raw / 1024
    return (current if current is not None else peak), peak


def peak_rss_mb(pid: int) -> float:
    """Another process's peak RSS in MB (Linux), NaN where /proc does not say."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def job_id(n: int) -> str:
    return f"job-{n:07d}"


# -- the engine side (runs in worker processes) ----------------------------------------------

def definitions(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "events.yaml").write_text(textwrap.dedent(EVENTS).lstrip(), encoding="utf-8")
    (root / "bench_wait.yaml").write_text(textwrap.dedent(SAGA).lstrip(), encoding="utf-8")
    return root


def make_engine(defs: Path, store: str) -> Any:
    from concordia import Catalog, Engine, Registry

    registry = Registry()

    @registry.action("bench.submit")
    def submit(ctx: Any) -> dict[str, Any]:
        return {"job_id": job_id(ctx.input["n"])}

    @registry.compensation("bench.cancel")
    def cancel(ctx: Any) -> None:
        return None

    return Engine(Catalog.load_strict([str(defs)]), registry, store)


def create_runs(engine: Any, n: int, chunk: int = 1000) -> float:
    """Start ``n`` runs and drive each to its await; return the seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        for i in range(start, min(start + chunk, n)):
            engine.start("bench_wait", {"n": i})
        engine.run_until_idle()
    return time.perf_counter() - t0


def matching_order(n: int, seed: int = 7) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def matching_events(numbers: list[int]) -> list[dict[str, Any]]:
    from concordia import new_event

    return [new_event("bench.job.finished", {"job_id": job_id(i), "score": 0.5},
                      source="urn:bench", version=1).to_dict() for i in numbers]


def warm_up(engine: Any) -> None:
    """The same work for the baseline and the loaded worker: one pass, one delivery."""
    from concordia import new_event

    engine.run_until_idle()
    engine.deliver(new_event("bench.job.finished", {"job_id": "nobody", "score": 0.0},
                             source="urn:bench", version=1).to_dict())
    engine.run_until_idle()


def resume_all(engine: Any, order: list[int], mode: str, batch: int) -> float:
    """Deliver the events matching ``order``, a batch at a time, then a worker pass per
    batch; return the seconds spent in the engine (building a batch of envelopes is the
    producer's work, and is kept out both of the time and of the process's peak RSS)."""
    seconds = 0.0
    resumed = 0
    for start in range(0, len(order), batch):
        chunk = matching_events(order[start:start + batch])
        t0 = time.perf_counter()
        if mode == "batched":
            deliveries = engine.deliver_many(chunk, batch_size=batch)
        else:
            deliveries = [engine.deliver(e) for e in chunk]
        engine.run_until_idle()
        seconds += time.perf_counter() - t0
        resumed += sum(len(d.resumed) for d in deliveries)
    if resumed != len(order):
        raise SystemExit(f"resumed {resumed} runs for {len(order)} events")
    return seconds


def worker(args: argparse.Namespace) -> None:
    """One measured process; prints one JSON object."""
    out: dict[str, Any] = {}
    rss0, _ = rss_mb()
    engine = make_engine(Path(args.defs), args.url)
    out["rss_open_mb"] = rss_mb()[0]
    if args.role in ("create", "memory"):
        if args.role == "memory":
            warm_up(engine)
        out["rss_before_mb"] = rss_mb()[0]
        out["create_s"] = create_runs(engine, args.n)
        out["rss_after_mb"], out["peak_mb"] = rss_mb()
        if args.role == "memory":
            out["resume_s"] = resume_all(engine, matching_order(args.n), args.mode, args.batch)
            done = len(engine.store.list_runs(status="completed", limit=args.n + 1))
            if done != args.n:
                raise SystemExit(f"memory: {done} of {args.n} runs completed")
    else:
        warm_up(engine)
        out["rss_mb"], out["peak_mb"] = rss_mb()
        if args.role == "resume":
            out["resume_s"] = resume_all(engine, matching_order(args.n), args.mode, args.batch)
            out["rss_after_mb"], out["peak_after_mb"] = rss_mb()
    out["rss_start_mb"] = rss0
    engine.close()
    print(json.dumps(out), flush=True)


# -- the driver ------------------------------------------------------------------------------

def spawn(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "engine")}
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def status_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
    finally:
        conn.close()


def copy_store(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


def prepare(defs: Path, db: Path, n: int) -> dict[str, Any]:
    """A store with ``n`` suspended runs (reused if ``db`` already holds exactly that)."""
    if db.exists() and status_counts(db) == {"suspended": n}:
        print(f"reusing {db}: {n} suspended runs", file=sys.stderr)
        return {}
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    print(f"creating {n} suspended runs in {db} ...", file=sys.stderr, flush=True)
    made = spawn("--role", "create", "--defs", str(defs), "--url", f"sqlite:///{db}",
                 "--n", str(n))
    counts = status_counts(db)
    if counts != {"suspended": n}:
        raise SystemExit(f"expected {n} suspended runs, found {counts}")
    return made


def bench_sqlite(args: argparse.Namespace, work: Path, defs: Path) -> list[dict[str, Any]]:
    db = Path(args.db) if args.db else work / "suspended.db"
    made = prepare(defs, db, args.n)
    empty = work / "empty.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{empty}{suffix}").unlink(missing_ok=True)
    base = spawn("--role", "baseline", "--defs", str(defs), "--url", f"sqlite:///{empty}",
                 "--n", "0")
    rows = []
    for mode in args.modes:
        copy = work / f"resume-{mode}.db"
        copy_store(db, copy)
        got = spawn("--role", "resume", "--defs", str(defs), "--url", f"sqlite:///{copy}",
                    "--n", str(args.n), "--mode", mode, "--batch", str(args.batch))
        counts = status_counts(copy)
        if counts != {"completed": args.n}:
            raise SystemExit(f"{mode}: expected {args.n} completed runs, found {counts}")
        row: dict[str, Any] = {
            "bench": "events", "store": "sqlite", "mode": mode,
            "batch": args.batch, "suspended_runs": args.n,
            "added_rss_mb": round(got["rss_mb"] - base["rss_mb"], 1),
            "resumes_per_s": round(args.n / got["resume_s"], 1),
            "baseline_rss_mb": round(base["rss_mb"], 1),
            "worker_rss_mb": round(got["rss_mb"], 1),
            "worker_peak_mb": round(got["peak_mb"], 1),
            "peak_after_resume_mb": round(got["peak_after_mb"], 1),
            "resume_s": round(got["resume_s"], 2),
        }
        if made:
            row["create_runs_per_s"] = round(args.n / made["create_s"], 1)
            row["creator_added_rss_mb"] = round(made["rss_after_mb"] - made["rss_before_mb"], 1)
        rows.append(row)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return rows


def bench_memory(args: argparse.Namespace, defs: Path) -> list[dict[str, Any]]:
    """The in-memory store holds everything in the process: its RSS is the journal's.
    Each configuration is one fresh process that creates the runs, then resumes them."""
    rows = []
    for mode in args.modes:
        got = spawn("--role", "memory", "--defs", str(defs), "--url", "memory://",
                    "--n", str(args.n), "--mode", mode, "--batch", str(args.batch))
        rows.append({"bench": "events", "store": "memory", "mode": mode, "batch": args.batch,
                     "suspended_runs": args.n,
                     "added_rss_mb": round(got["rss_after_mb"] - got["rss_before_mb"], 1),
                     "resumes_per_s": round(args.n / got["resume_s"], 1),
                     "baseline_rss_mb": round(got["rss_before_mb"], 1),
                     "worker_rss_mb": round(got["rss_after_mb"], 1),
                     "worker_peak_mb": round(got["peak_mb"], 1),
                     "resume_s": round(got["resume_s"], 2),
                     "create_runs_per_s": round(args.n / got["create_s"], 1)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("store", "mode", "suspended", "added RSS MB", "resumes/s", "worker RSS MB",
            "baseline MB", "created/s")
    lines = [head]
    for r in rows:
        lines.append((r["store"], f"{r['mode']}" + (f" ({r['batch']})" if r["mode"] == "batched"
                                                    else ""),
                      f"{r['suspended_runs']:,}", f"{r['added_rss_mb']:.1f}",
                      f"{r['resumes_per_s']:,.0f}", f"{r['worker_rss_mb']:.1f}",
                      f"{r['baseline_rss_mb']:.1f}",
                      f"{r['create_runs_per_s']:,.0f}" if "create_runs_per_s" in r else "-"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(row, widths, strict=True))) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    verdicts = []
    for r in rows:
        ok_mem = r["added_rss_mb"] < TARGET_ADDED_MB
        ok_rate = r["resumes_per_s"] >= TARGET_RESUMES_PER_S
        verdicts.append(f"{r['store']}/{r['mode']}: added RSS {'meets' if ok_mem else 'MISSES'}"
                        f" < {TARGET_ADDED_MB:.0f} MB; resumes/s {'meets' if ok_rate else 'MISSES'}"
                        f" >= {TARGET_RESUMES_PER_S:,.0f}")
    return "\n".join([*text, "", *verdicts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="suspended runs (100000)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--modes", default="batched,single",
                        help="comma-separated: batched (deliver_many), single (deliver)")
    parser.add_argument("--batch", type=int, default=256,
                        help="events per deliver_many call and per run_until_idle pass")
    parser.add_argument("--db", help="SQLite file for the suspended runs: reused when it "
                                     "holds exactly --n suspended runs, kept afterwards")
    # Internal: the measured processes.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", choices=("create", "baseline", "resume", "memory"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--defs", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="batched", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - {"batched", "single"}:
        parser.error("--modes takes batched and/or single")
    if args.n < 1:
        parser.error("--n must be at least 1")
    with tempfile.TemporaryDirectory(prefix="concordia-bench-events-") as tmp:
        work = Path(tmp)
        defs = definitions(work / "defs")
        if args.store == "sqlite":
            rows = bench_sqlite(args, work, defs)
        else:
            rows = bench_memory(args, defs)
    print(table(rows))
    print()
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
