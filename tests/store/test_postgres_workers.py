"""Workers on PostgreSQL: a timer fires once across all of them, and a run another
process makes due wakes an idle worker through LISTEN/NOTIFY, long before it would poll."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.engine import Engine
from tests.pg import drop_schema, new_schema, schema_url
from tests.runtime.sagas import action, load_catalog, saga

pytestmark = pytest.mark.postgres
CatalogOf = Callable[..., Catalog]
RUNS = 40


@pytest.fixture
def catalog_of(tmp_path: Path) -> CatalogOf:
    def make(*docs: Any) -> Catalog:
        return load_catalog(*docs, directory=tmp_path / "defs")

    return make


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = new_schema()
    yield schema_url(schema)
    drop_schema(schema)


def retrying(catalog_of: CatalogOf) -> Catalog:
    return catalog_of(saga("order", [action("charge", retry={
        "attempts": 3, "retryable": ["ConnectionError"],
        "backoff": {"initial": "300ms", "factor": 1, "jitter": 0}})]))


def counting(attempts: Counter[tuple[str, int]]) -> Registry:
    registry = Registry()

    def charge(ctx: Any) -> dict[str, Any]:
        attempts[(ctx.run_id, ctx.attempt)] += 1
        if ctx.attempt == 1:
            raise ConnectionError("flaky")
        return {"ok": True}

    registry.add_action("charge.do", charge)
    registry.add_compensation("charge.undo", lambda ctx: None)
    return registry


def test_retry_timers_fire_once_across_workers(catalog_of: CatalogOf, pg_url: str) -> None:
    catalog = retrying(catalog_of)
    attempts: Counter[tuple[str, int]] = Counter()
    with Engine(catalog, counting(attempts), pg_url, clock=SystemClock(),
                claim_new_runs=False) as starter:
        ids = [starter.start("order", {}).id for _ in range(RUNS)]

    async def main() -> None:
        workers = [AsyncEngine(catalog, counting(attempts), pg_url) for _ in range(3)]
        tasks = [asyncio.create_task(w.work(concurrency=4, poll_interval=0.05))
                 for w in workers]
        deadline = time.monotonic() + 60
        while True:
            runs = await workers[0].list_runs(limit=RUNS + 1)
            if all(r.status == "completed" for r in runs) and len(runs) == RUNS:
                break
            assert time.monotonic() < deadline, Counter(r.status for r in runs)
            await asyncio.sleep(0.05)
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        for w in workers:
            await w.aclose()

    asyncio.run(main())
    # Each run's first attempt failed and its retry timer fired exactly once.
    assert {k: n for k, n in attempts.items() if n != 1} == {}
    assert sorted(attempts) == sorted((rid, a) for rid in ids for a in (1, 2))


def test_an_idle_worker_is_woken_by_notify_not_by_its_poll(catalog_of: CatalogOf,
                                                           pg_url: str) -> None:
    catalog = catalog_of(saga("order", [action("charge")]))
    done: dict[str, float] = {}
    registry = Registry()
    registry.add_action("charge.do", lambda ctx: done.setdefault(ctx.run_id, time.monotonic()))
    registry.add_compensation("charge.undo", lambda ctx: None)

    async def main() -> list[float]:
        worker = AsyncEngine(catalog, registry, pg_url)
        # It polls every 30 s: only a notification can bring it a run sooner.
        task = asyncio.create_task(worker.work(concurrency=2, poll_interval=30.0))
        await asyncio.sleep(1.0)  # idle, listening
        latencies = []
        with Engine(catalog, Registry(), pg_url, check_bindings=False,
                    claim_new_runs=False) as api:  # another process's engine, say
            for _ in range(3):
                began = time.monotonic()
                run = await asyncio.to_thread(api.start, "order", {})
                while run.id not in done:
                    assert time.monotonic() - began < 10, "no wake-up"
                    await asyncio.sleep(0.01)
                latencies.append(done[run.id] - began)
        worker.stop()
        await task
        await worker.aclose()
        return latencies

    latencies = asyncio.run(main())
    assert max(latencies) < 5.0, latencies
