"""Benchmark: ``concordia serve`` on loopback with SQLite, against the engine in-process.

Two workloads, each of N requests sent by 32 concurrent clients (httpx, async):

* **resume** — ``POST /events`` of signed CloudEvents, each resuming one of N runs that
  await it (the same small saga as ``bench/events.py``: an action, then an ``await``
  whose match is indexable);
* **start** — ``POST /runs`` of a one-step saga.

The server is ``concordia serve`` in a process of its own (``--no-worker``: the runs are
only resumed or created, as in the floor). The **floor**, measured in the same run on a
copy of the same store, is the same number of ``engine.deliver`` (or ``engine.start``)
calls made in-process by 32 concurrent tasks on an ``AsyncEngine``. Reported: accepted
requests per second, p50 and p99 latency as the clients saw them (and the server's own,
from its ``Server-Timing`` header), the ratio to the floor, the server's peak RSS, and the
CPU time per request of the server and of the clients (on a 2-core machine the clients'
share bounds the rate). Every accepted request is checked against the store afterwards.

Prints a table, then one JSON object per line per workload. Targets: at least 0.5 of the
in-process floor, p99 under 50 ms, server RSS under 120 MB.

    .venv/bin/python bench/service.py [--n 3000] [--clients 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from events import EVENTS, create_runs, matching_events, peak_rss_mb  # noqa: E402
from events import SAGA as WAIT_SAGA  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
TOKEN = "bench-token-0123456789abcdef0123456789abcdef"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 120.0

START_SAGA = """
name: bench_start
version: 1
input_schema:
  n: {type: integer, required: true}
steps:
  - name: note
    action: bench.note
    compensate: none
    reason: records nothing
"""
HANDLERS = '''
"""Handlers of the service benchmark's sagas."""
from concordia import Registry

registry = Registry()


@registry.action("bench.submit")
def submit(ctx):
    return {"job_id": f"job-{ctx.input['n']:07d}"}


@registry.compensation("bench.cancel")
def cancel(ctx):
    return None


@registry.action("bench.note")
def note(ctx):
    return {"n": ctx.input["n"]}
'''


def prepare(work: Path, n: int) -> Path:
    """Definitions, handlers, and a store holding ``n`` runs suspended on their await."""
    from concordia import Catalog, Engine
    from concordia.registry import load_registry

    defs = work / "definitions"
    defs.mkdir(parents=True)
    (defs / "events.yaml").write_text(textwrap.dedent(EVENTS).lstrip())
    (defs / "wait.yaml").write_text(textwrap.dedent(WAIT_SAGA).lstrip())
    (defs / "start.yaml").write_text(textwrap.dedent(START_SAGA).lstrip())
    (work / "bench_handlers.py").write_text(HANDLERS)
    sys.path.insert(0, str(work))
    engine = Engine(Catalog.load_strict([str(defs)]), load_registry("bench_handlers"),
                    f"sqlite:///{work / 'prepared.db'}")
    create_runs(engine, n)
    engine.close()
    return defs


def events(n: int) -> list[dict[str, Any]]:
    return matching_events(list(range(n)))


def copy_store(work: Path, name: str) -> str:
    shutil.copy(work / "prepared.db", work / f"{name}.db")
    return f"sqlite:///{work / f'{name}.db'}"


# -- the floor: the same calls in-process ---------------------------------------------------

async def floor(defs: Path, url: str, kind: str, items: list[Any], clients: int) -> float:
    from concordia import AsyncEngine, Catalog
    from concordia.registry import load_registry

    engine = AsyncEngine(Catalog.load_strict([str(defs)]), load_registry("bench_handlers"),
                         url, claim_new_runs=False)
    queue = list(reversed(items))

    async def client() -> None:
        while queue:
            item = queue.pop()
            if kind == "resume":
                await engine.deliver(item)
            else:
                await engine.start("bench_start", item)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    took = time.perf_counter() - t0
    await engine.aclose()
    return len(items) / took


# -- the server --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(work: Path, defs: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CONCORDIA_WEBHOOK_SECRETS": SECRET,
           "CONCORDIA_API_TOKENS": f"bench:concordia.operate:{TOKEN}",
           "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)])}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("concordia")), "serve", "--store", url,
         "--definitions", str(defs), "--no-worker", "--port", str(port)],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    error = proc.stderr.read().decode() if proc.stderr else ""
    raise SystemExit(f"the server did not start: {error}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(base: str, kind: str, items: list[Any], clients: int
                 ) -> tuple[float, list[float], list[float], list[int], list[Any]]:
    import httpx

    from concordia.service.signatures import signature_header

    latencies: list[float] = []
    server: list[float] = []
    statuses: list[int] = []
    bodies: list[Any] = []
    queue = list(reversed(items))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        async def client() -> None:
            while queue:
                item = queue.pop()
                if kind == "resume":
                    body = json.dumps(item).encode()
                    headers = {"Content-Type": "application/cloudevents+json",
                               "Concordia-Signature": signature_header(
                                   [SECRET], int(time.time()), body)}
                    path = "/events"
                else:
                    body = json.dumps({"saga": "bench_start", "input": item}).encode()
                    headers = {"Content-Type": "application/json",
                               "Authorization": f"Bearer {TOKEN}"}
                    path = "/runs"
                t0 = time.perf_counter()
                answer = await http.post(path, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                timing = answer.headers.get("server-timing", "dur=nan").split("dur=")[1]
                server.append(float(timing) / 1000)
                statuses.append(answer.status_code)
                bodies.append(answer.json())

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        took = time.perf_counter() - t0
    return took, latencies, server, statuses, bodies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def check(url: str, kind: str, n: int, bodies: list[Any]) -> None:
    """Every accepted request is in the store once."""
    from concordia.store import open_store
    from concordia.store.base import RunQueries

    store = open_store(url, readonly=True)
    try:
        if kind == "resume":
            resumed = [r for b in bodies for r in b["resumed"]]
            if len(resumed) != n or len(set(resumed)) != n:
                raise SystemExit(f"resume: {len(set(resumed))} runs resumed for {n} events")
            for b in bodies[:: max(n // 200, 1)]:
                if store.get_event(b["event_id"]) is None:
                    raise SystemExit(f"resume: event {b['event_id']} is not in the store")
        else:
            assert isinstance(store, RunQueries)
            ids = {b["id"] for b in bodies}
            runs = store.page_runs("bench_start", None, None, None, 10 * n) or []
            if len(ids) != n or {r.id for r in runs} != ids:
                raise SystemExit(f"start: {len(runs)} runs stored for {n} accepted")
    finally:
        store.close()


def measure(work: Path, defs: Path, kind: str, n: int, clients: int) -> dict[str, Any]:
    items: list[Any] = events(n) if kind == "resume" else [{"n": i} for i in range(n)]
    floor_rate = asyncio.run(floor(defs, copy_store(work, f"floor-{kind}"), kind, items,
                                   clients))
    if kind == "resume":
        items = events(n)  # new ids: the floor's were delivered to another copy
    url = copy_store(work, f"served-{kind}")
    proc, base = serve(work, defs, url)
    try:
        cpu0, own0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid())
        took, latencies, server, statuses, bodies = asyncio.run(
            hammer(base, kind, items, clients))
        server_cpu = cpu_seconds(proc.pid) - cpu0
        client_cpu = cpu_seconds(os.getpid()) - own0
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    accepted = sum(1 for s in statuses if s in (201, 202))
    if accepted != n:
        raise SystemExit(f"{kind}: {accepted} of {n} requests accepted: "
                         f"{sorted(set(statuses))}")
    check(url, kind, n, bodies)
    rate = accepted / took
    return {"bench": "service", "workload": kind, "store": "sqlite", "requests": n,
            "clients": clients, "accepted_per_s": round(rate, 1),
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "server_p50_ms": round(percentile(server, 0.50), 2),
            "server_p99_ms": round(percentile(server, 0.99), 2),
            "floor_per_s": round(floor_rate, 1), "ratio": round(rate / floor_rate, 3),
            "server_peak_rss_mb": round(rss, 1),
            "server_cpu_ms_per_request": round(server_cpu / n * 1000, 3),
            "client_cpu_ms_per_request": round(client_cpu / n * 1000, 3),
            "meets": {"ratio": rate / floor_rate >= TARGET_RATIO,
                      "p99": percentile(latencies, 0.99) < TARGET_P99_MS,
                      "rss": rss < TARGET_RSS_MB}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per workload")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workloads", default="resume,start")
    parser.add_argument("--keep", help="work in this directory and keep it")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="concordia-bench-service-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "engine"))
    try:
        defs = prepare(work, args.n)
        rows = [measure(work, defs, kind, args.n, args.clients)
                for kind in args.workloads.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    head = ("workload", "requests/s", "p50 ms", "p99 ms", "server p99 ms", "floor/s", "ratio",
            "server RSS MB", "server CPU ms/req", "client CPU ms/req")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(v) for v in (r["workload"], r["accepted_per_s"], r["p50_ms"],
                                          r["p99_ms"], r["server_p99_ms"], r["floor_per_s"],
                                          r["ratio"], r["server_peak_rss_mb"],
                                          r["server_cpu_ms_per_request"],
                                          r["client_cpu_ms_per_request"])))
    print()
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
