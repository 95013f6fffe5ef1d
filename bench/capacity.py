"""The capacity model of docs/scaling.md, from figures bench/scale.py measured, checked
against the worker rows measured on this machine.

    .venv/bin/python bench/capacity.py [scale-output.txt]

It reads bench/scale.py's JSON rows (from the file, or from standard input), takes what
one step costs PostgreSQL (server CPU, WAL bytes, round trips) and a worker (its CPU), and
says how many steps per second one PostgreSQL server of 8, 32 and 96 cores sustains, how
many workers that takes, and what saturates first. It then predicts the 1, 2 and 4 worker
rows of this machine's run (2 cores shared by the workers, the server and the benchmark)
and prints the prediction beside the measurement: one table, then one JSON object a line.

The model, per step:

- the server's CPU: ``db_cpu_us_per_step`` µs of a core (its backends'; WAL writing and
  flushing included, as backends do it at commit);
- the WAL: ``wal_bytes_per_step`` bytes, written and flushed; a server's WAL device
  sustains a bandwidth (``--wal-mb-s``, 200 MB/s for a datacentre SSD) and the group
  commit of concurrent transactions shares its flushes;
- a worker: ``worker_cpu_us_per_step`` µs of its one core (one process: one GIL), and with
  I/O-bound handlers ``concurrency`` runs in flight, each step taking ``handler_ms`` plus
  a round trip (``rtt_ms``) per commit;
- usable CPU: a fraction (``--headroom``, 0.7) of the server's cores, the rest for
  autovacuum, checkpoints, reads and the operators' queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CORES = (8, 32, 96)


def rows_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def pick(rows: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    raise SystemExit(f"no row with {want} in the input: run bench/scale.py first")


def server_capacity(cores: int, db_us: float, wal_bytes: float, wal_mb_s: float,
                    headroom: float) -> tuple[float, str]:
    """Steps per second one server sustains, and what limits it."""
    cpu = cores * headroom * 1e6 / db_us
    wal = wal_mb_s * 1e6 / wal_bytes
    return (cpu, "server CPU") if cpu <= wal else (wal, "WAL bandwidth")


def worker_rate(worker_us: float, concurrency: int, handler_ms: float, rtt_ms: float,
                round_trips: float) -> float:
    """Steps per second one worker process sustains: its core, or its runs in flight."""
    by_cpu = 1e6 / worker_us
    if handler_ms <= 0:
        return by_cpu
    by_waiting = concurrency / ((handler_ms + round_trips * rtt_ms) / 1000.0)
    return min(by_cpu, by_waiting)


def here(workers: int, worker_us: float, db_us: float, concurrency: int, handler_ms: float,
         rtt_ms: float, round_trips: float, cores: float, bench_us: float) -> float:
    """Steps per second ``workers`` processes reach on this machine: each worker bound by
    its runs in flight or its core, all of them together with the server (and the
    benchmark's polling) by the machine's cores."""
    per_worker = worker_rate(worker_us, concurrency, handler_ms, rtt_ms, round_trips)
    machine = cores * 1e6 / (worker_us + db_us + bench_us)
    return min(workers * per_worker, machine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="bench/scale.py's output (default stdin)")
    parser.add_argument("--wal-mb-s", type=float, default=200.0)
    parser.add_argument("--headroom", type=float, default=0.7)
    parser.add_argument("--rtt-ms", type=float, default=0.5,
                        help="a round trip between a worker and the server in production")
    parser.add_argument("--handler-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    text = Path(args.source).read_text("utf-8") if args.source else sys.stdin.read()
    rows = rows_of(text)
    seq = pick(rows, db="postgresql", concurrency=8, workers=1, handler_ms=0)
    slow = [pick(rows, db="postgresql", workers=n, handler_ms=args.handler_ms)
            for n in (1, 2, 4)]
    # The worker processes' own costs (their claims and lease renewals included), the
    # lowest of the three rows; the round trips are counted in the 8-in-flight row.
    db_us = min(r["db_cpu_us_per_step"] for r in slow)
    wal = min(r["wal_bytes_per_step"] for r in slow)
    worker_us = min(r["worker_cpu_us_per_step"] for r in slow)
    round_trips = seq.get("round_trips_per_step") or 1.0

    print(f"per step: server {db_us} µs of CPU, {wal} WAL bytes, {round_trips} round trips; "
          f"a worker {worker_us} µs of CPU")
    print(f"{'cores':>6}{'steps/s':>10}{'sagas/s':>9}{'limit':>15}{'workers':>9}"
          f"{'worker cores':>14}")
    out: list[dict[str, Any]] = []
    per_worker = worker_rate(worker_us, args.concurrency, args.handler_ms, args.rtt_ms,
                             round_trips)
    for cores in CORES:
        steps, limit = server_capacity(cores, db_us, wal, args.wal_mb_s, args.headroom)
        workers = steps / per_worker
        out.append({"model": "one server", "cores": cores, "steps_per_s": round(steps),
                    "sagas_per_s": round(steps / 5.4), "limit": limit,
                    "workers": round(workers), "worker_cores": round(steps * worker_us / 1e6),
                    "handler_ms": args.handler_ms, "concurrency": args.concurrency})
        print(f"{cores:>6}{steps:>10.0f}{steps / 5.4:>9.0f}{limit:>15}{workers:>9.0f}"
              f"{steps * worker_us / 1e6:>14.0f}")

    # This machine: 2 cores; the benchmark's own polling costs little; the round trip on
    # loopback is a tenth of a millisecond.
    print("\nthis machine (2 cores: workers, server and benchmark together):")
    print(f"{'workers':>8}{'predicted':>11}{'measured':>10}{'ratio':>7}")
    base = None
    for n, row in zip((1, 2, 4), slow, strict=True):
        predicted = here(n, worker_us, db_us, row["concurrency"], row["handler_ms"], 0.1,
                         round_trips, 2.0, 20.0)
        measured = row["steps_per_s"]
        base = base or measured
        print(f"{n:>8}{predicted:>11.0f}{measured:>10}{measured / predicted:>7.2f}")
        out.append({"model": "this machine", "workers": n, "predicted_steps_per_s":
                    round(predicted), "measured_steps_per_s": measured,
                    "measured_over_predicted": round(measured / predicted, 2),
                    "scaling": round(measured / base, 2)})
    for r in out:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
