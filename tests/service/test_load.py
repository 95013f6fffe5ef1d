"""A bounded burst over loopback: 2,600 concurrent POST /runs and POST /events (32 at a
time), some of them retried; every accepted run and event is in the store exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from concordia.service.signatures import signature_header
from tests.service.conftest import AUTH, SECRET, ThreadedServer, client, event, make_app

pytestmark = pytest.mark.slow
CLIENTS = 32
WAITING = 600  # payment runs suspended before the burst, each resumed by one event
STARTS = 900  # POST /runs in the burst, each with its own Idempotency-Key
TRIGGERS = 700  # shop.order.placed events in the burst, each starting a run
RETRIED = 400  # requests of the burst sent a second time (a client retrying)


def _signed(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/cloudevents+json",
            "Concordia-Signature": signature_header([SECRET], int(time.time()), body)}


def _burst(waiting_orders: list[str]) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(kind, key, body, headers) of every request of the burst, shuffled, retries included."""
    requests = []
    for i in range(STARTS):
        body = json.dumps({"saga": "order", "input": {"order_id": f"start-{i}"}}).encode()
        key = f"start-{i}-{uuid.uuid4()}"
        requests.append(("run", key, body, {"Content-Type": "application/json",
                                            "Idempotency-Key": key, **AUTH}))
    for order in waiting_orders:
        e = event("shop.payment.settled", {"order_id": order, "amount": 100})
        body = json.dumps(e).encode()
        requests.append(("resume", e["id"], body, _signed(body)))
    for i in range(TRIGGERS):
        e = event("shop.order.placed", {"order_id": f"placed-{i}"})
        body = json.dumps(e).encode()
        requests.append(("trigger", e["id"], body, _signed(body)))
    rng = random.Random(7)
    requests += rng.sample(requests, RETRIED)
    rng.shuffle(requests)
    return requests


async def _send_all(url: str, requests: list[tuple[str, str, bytes, dict[str, str]]]
                    ) -> list[tuple[str, str, int, Any]]:
    limit = asyncio.Semaphore(CLIENTS)
    out: list[tuple[str, str, int, Any]] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async def one(kind: str, key: str, body: bytes, headers: dict[str, str]) -> None:
            async with limit:
                path = "/runs" if kind == "run" else "/events"
                answer = await http.post(path, content=body, headers=headers)
                out.append((kind, key, answer.status_code, answer.json()))

        await asyncio.wait_for(asyncio.gather(*(one(*r) for r in requests)), 300)
    return out


def test_a_burst_of_runs_and_events_lands_each_accepted_one_exactly_once(tmp_path: Path
                                                                          ) -> None:
    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", concurrency=16)
    store = engine.store
    with ThreadedServer(app) as url, client(url, timeout=60) as http:
        orders = [f"wait-{i}" for i in range(WAITING)]
        waiting = {http.post("/runs", json={"saga": "payment", "input": {"order_id": o}}
                               ).json()["id"]: o for o in orders}
        deadline = time.monotonic() + 120
        while sum(n for s, st, n in store.run_counts() if st == "suspended") < WAITING:
            assert time.monotonic() < deadline, "the payment runs did not all suspend"
            time.sleep(0.1)
        requests = _burst(orders)
        began = time.perf_counter()
        answers = asyncio.run(_send_all(url, requests))
        took = time.perf_counter() - began
        statuses = Counter((kind, status) for kind, _, status, _ in answers)
        print(f"\n{len(answers)} requests in {took:.1f}s: {dict(statuses)}")
        assert len(answers) == STARTS + WAITING + TRIGGERS + RETRIED >= 2000
        assert all(status in (200, 201, 202, 409) for _, _, status, _ in answers), statuses
        # a run start is accepted once (201) and answered again (200) when retried
        run_ids: dict[str, set[str]] = {}
        for kind, key, status, body in answers:
            if kind == "run":
                assert status in (200, 201)
                run_ids.setdefault(key, set()).add(body["id"])
        assert len(run_ids) == STARTS
        assert all(len(ids) == 1 for ids in run_ids.values())
        created = Counter(key for kind, key, status, _ in answers
                          if kind == "run" and status == 201)
        assert set(created.values()) == {1}
        assert len(created) == STARTS
        # an event is accepted once (202); its retry is refused as a replay (409)
        accepted = Counter(key for kind, key, status, _ in answers
                           if kind != "run" and status == 202)
        assert len(accepted) == WAITING + TRIGGERS
        assert set(accepted.values()) == {1}
        replays = [s for kind, _, s, _ in answers if kind != "run" and s == 409]
        assert len(replays) == sum(1 for k, _, _, _ in answers if k != "run") - len(accepted)
        started_by = {key: body["started"] for kind, key, status, body in answers
                      if kind == "trigger" and status == 202}
        assert all(len(s) == 1 for s in started_by.values())
        # the store holds each of them exactly once, and every run ran to its end
        deadline = time.monotonic() + 180
        total = WAITING + STARTS + TRIGGERS
        while sum(n for _, st, n in store.run_counts() if st == "completed") < total:
            assert time.monotonic() < deadline, store.run_counts()
            time.sleep(0.2)
        runs = store.page_runs(None, None, None, None, 10 * total)
        assert len(runs) == len({r.id for r in runs}) == total
        by_id = {r.id: r for r in runs}
        assert {i for ids in run_ids.values() for i in ids} <= set(by_id)
        causes = Counter(r.causation_id for r in runs if r.causation_id)
        assert causes == Counter(dict.fromkeys(started_by, 1))
        for key in accepted:
            assert store.get_event(key) is not None
        for run_id in waiting:
            resumed = [h for h in store.history(run_id) if h.kind == "await.resumed"]
            assert len(resumed) == 1
