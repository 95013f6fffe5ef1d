"""Benchmark: the server's CPU time per request for ``GET /runs/{id}`` and ``POST /runs``.

The app (:func:`concordia.service.app.create_app`, with its guard, limits and timing
middleware, on the memory store, no worker) is called in-process through ASGI, one
request at a time, so the figure is the server's own work: no sockets, no HTTP client.
``GET /runs/{id}`` reads a compensated run of the test domain's ``order`` saga (three
steps, an error, two compensations, its history); ``POST /runs`` starts an ``order`` run.

Prints one JSON object per line per route: CPU µs per request (the best of ``--rounds``
rounds of ``--n`` requests) and the answer's size. On a shared machine CPU time varies by
a tenth from run to run; ``--route`` runs one route only, so that an instruction count
(``valgrind --tool=cachegrind --cache-sim=no``, at two values of ``--n``) can compare two
versions exactly.

    .venv/bin/python bench/answers.py [--n 3000] [--rounds 5] [--route get|post]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from concordia.registry import load_registry  # noqa: E402
from concordia.service.api_tokens import ApiTokens  # noqa: E402
from concordia.service.app import build_engine, create_app  # noqa: E402
from concordia.service.credentials import Credentials  # noqa: E402
from concordia.service.metrics import Metrics  # noqa: E402
from concordia.service.state import ServiceOptions  # noqa: E402

DOMAIN = ROOT / "tests" / "service" / "domain"
TOKEN = "bench-token-0123456789abcdef0123456789abcdef"


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app; its status and body."""
    headers = [(b"host", b"localhost"), (b"authorization", f"Bearer {TOKEN}".encode())]
    if body:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("localhost", 80)}
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def measure(app: Any, method: str, path: str, body: bytes, n: int, rounds: int,
                  expect: int) -> tuple[float, int]:
    """The best round's CPU µs per request, and the answer's size in bytes."""
    best = float("inf")
    size = 0
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(n):
            status, answer = await call(app, method, path, body)
        took = time.process_time() - began
        assert status == expect, (status, answer[:500])
        size = len(answer)
        best = min(best, took / n * 1e6)
    return best, size


async def main(n: int, rounds: int, route: str | None) -> None:
    # The guard logs every operating request; what a log costs depends on where it goes,
    # which is not what this measures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    metrics = Metrics()
    engine = build_engine("memory://", [str(DOMAIN / "definitions")],
                          load_registry("tests.service.domain.handlers"), metrics, worker=True)
    options = ServiceOptions(worker=False,
                             credentials=Credentials(ApiTokens([f"bench:concordia.read,"
                                                                f"concordia.operate:{TOKEN}"])))
    app = create_app(engine, options, metrics=metrics)
    run = await engine.start("order", {"order_id": "b-1", "fail_at": "ship"})
    await engine.run_until_idle()
    assert str((await engine.get_run(run.id)).status) == "compensated"
    start = json.dumps({"saga": "order", "input": {"order_id": "b-2"}}).encode()
    for name, method, path, body, expect in (
            ("GET /runs/{id}", "GET", f"/runs/{run.id}", b"", 200),
            ("POST /runs", "POST", "/runs", start, 201)):
        if route is not None and method.lower() != route:
            continue
        await call(app, method, path, body)  # warm up: routes, models, caches
        cpu, size = await measure(app, method, path, body, n, rounds, expect)
        print(json.dumps({"route": name, "cpu_us_per_request": round(cpu, 1),
                          "answer_bytes": size, "n": n, "rounds": rounds}))
    await engine.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--route", choices=["get", "post"])
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.route))
