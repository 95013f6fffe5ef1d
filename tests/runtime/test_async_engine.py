"""The engine driven from inside a running event loop, as an asyncio service drives it.

Plain pytest functions run their scenario with ``asyncio.run``. They prove that starting,
advancing and reading runs inside a running loop never trips over that loop (the async
engine, and the sync engine called from a loop as a notebook does); that
``work(concurrency=N)`` has exactly N runs in flight at its peak and never one run twice,
and that ``stop()`` lets the steps in hand finish, releases their leases and starts
nothing new; that async handlers run on the host's loop and sync ones off it, so the loop
keeps ticking; and that a FastAPI app whose lifespan runs ``engine.work()`` completes the
runs its requests start.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import structlog

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError
from concordia.registry import Registry
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.engine import Engine
from concordia.status import RunStatus
from tests.runtime.sagas import action, saga

CatalogOf = Callable[..., Catalog]
T = TypeVar("T")

LOOP_ERROR = "Cannot run the event loop while another loop is running"
# Every wait in this module is bounded: a broken engine fails a test, never hangs it.
BOUND = 20.0


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, BOUND * 2)
    return asyncio.run(bounded())


async def until(condition: Callable[[], Awaitable[bool]], what: str,
                interval: float = 0.01) -> None:
    deadline = time.monotonic() + BOUND
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(interval)


def two_steps(catalog_of: CatalogOf) -> Catalog:
    return catalog_of(saga("order", [action("reserve"), action("ship")]))


def registry_of(actions: dict[str, Callable[[Any], Any]],
                compensations: dict[str, Callable[[Any], Any]] | None = None) -> Registry:
    registry = Registry()
    for name, fn in actions.items():
        registry.add_action(f"{name}.do", fn)
        registry.add_compensation(f"{name}.undo",
                                  (compensations or {}).get(name, lambda ctx: None))
    return registry


# -- inside a running loop ---------------------------------------------------------------------


def test_async_engine_works_inside_a_running_loop(catalog_of: CatalogOf, store_url: str,
                                                  clock: VirtualClock) -> None:
    catalog = catalog_of(saga("order", [
        action("reserve"),
        action("charge", depends_on=["reserve"],
               retry={"attempts": 2, "backoff": {"initial": "5s", "jitter": 0}}),
        action("pack", depends_on=["reserve"]),
        action("ship", depends_on=["charge", "pack"]),
    ]))
    charges = []

    async def charge(ctx: Any) -> Any:
        charges.append(ctx.attempt)
        await asyncio.sleep(0)
        if ctx.attempt == 1:
            raise ConnectionError("gateway down")
        return {"charged": True}

    registry = registry_of({"reserve": lambda ctx: {"r": 1}, "charge": charge,
                            "pack": lambda ctx: {"p": 1}, "ship": lambda ctx: {"s": 1}})

    async def scenario() -> None:
        async with AsyncEngine(catalog, registry, store_url, clock=clock) as engine:
            first = await engine.start("order", {"n": 1})
            second = await engine.start("order", {"n": 2})
            await engine.run_until_idle()
            waiting = await engine.get_run(first.id)
            assert waiting.status == RunStatus.WAITING  # charge waits on its retry timer
            assert await engine.drain() > 0  # the virtual clock jumps to the timer
            for run in (first, second):
                view = await engine.get_run(run.id)
                assert view.status == RunStatus.COMPLETED, view.error
                assert view.results["charge"] == {"charged": True}
            assert {v.id for v in await engine.list_runs(status="completed")} == {
                first.id, second.id}

    with structlog.testing.capture_logs() as logs:
        run_async(scenario())
    assert charges == [1, 1, 2, 2]
    assert not [e for e in logs if LOOP_ERROR in str(e)]


def test_sync_engine_called_from_a_running_loop_completes_its_runs(
        catalog_of: CatalogOf, store_url: str) -> None:
    # A notebook or an async test calls the sync engine with a loop running in its
    # thread: an async handler and a parallel stage must still run (not fail the run).
    catalog = catalog_of(saga("order", [
        action("reserve"), action("charge", depends_on=["reserve"]),
        action("pack", depends_on=["reserve"])]))

    async def reserve(ctx: Any) -> Any:
        await asyncio.sleep(0)
        return {"r": 1}

    registry = registry_of({"reserve": reserve, "charge": lambda ctx: {"c": 1},
                            "pack": lambda ctx: {"p": 1}})

    async def scenario() -> None:
        with Engine(catalog, registry, store_url) as engine:
            run = engine.start("order", {})
            engine.run_until_idle()
            view = engine.get_run(run.id)
            assert view.status == RunStatus.COMPLETED, view.error
            assert sorted(view.results) == ["charge", "pack", "reserve"]

    with structlog.testing.capture_logs() as logs:
        run_async(scenario())
    assert not [e for e in logs if LOOP_ERROR in str(e)]


# -- work(concurrency=N) -----------------------------------------------------------------------


class Gauge:
    """Counts handler calls in flight, overall and per run, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.per_run: dict[str, int] = {}
        self.run_peak = 0
        self.calls: list[tuple[str, str]] = []

    def enter(self, ctx: Any) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.per_run[ctx.run_id] = self.per_run.get(ctx.run_id, 0) + 1
            self.run_peak = max(self.run_peak, self.per_run[ctx.run_id])
            self.calls.append((ctx.run_id, ctx.step))

    def leave(self, ctx: Any) -> None:
        with self.lock:
            self.now -= 1
            self.per_run[ctx.run_id] -= 1


@pytest.mark.parametrize("style", ["async", "sync"])
def test_work_advances_n_runs_at_once_and_never_one_run_twice(
        catalog_of: CatalogOf, store_url: str, style: str) -> None:
    n, runs = 3, 7
    gauge = Gauge()

    async def async_handler(ctx: Any) -> Any:
        gauge.enter(ctx)
        try:
            # Stay in flight until N calls are (or a short while passes): the peak then
            # shows whether the worker fills exactly N slots.
            deadline = time.monotonic() + 3.0
            while gauge.now < n and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)
            return {"step": ctx.step}
        finally:
            gauge.leave(ctx)

    def sync_handler(ctx: Any) -> Any:
        gauge.enter(ctx)
        try:
            deadline = time.monotonic() + 3.0
            while gauge.now < n and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.02)
            return {"step": ctx.step}
        finally:
            gauge.leave(ctx)

    handler = async_handler if style == "async" else sync_handler
    registry = registry_of({"reserve": handler, "ship": handler})

    async def scenario() -> list[str]:
        async with AsyncEngine(two_steps(catalog_of), registry, store_url) as engine:
            worker = asyncio.create_task(engine.work(concurrency=n, poll_interval=0.05))
            ids = [(await engine.start("order", {"i": i})).id for i in range(runs)]

            async def all_done() -> bool:
                views = [await engine.get_run(i) for i in ids]
                return all(v.status == RunStatus.COMPLETED for v in views)

            await until(all_done, "every run completed")
            engine.stop()
            await worker
            return ids

    ids = run_async(scenario())
    assert gauge.peak == n
    assert gauge.run_peak == 1
    assert sorted(gauge.calls) == sorted((i, s) for i in ids for s in ("reserve", "ship"))


@pytest.mark.parametrize("started", ["before work", "during work"])
def test_stop_finishes_the_steps_in_hand_releases_leases_and_starts_nothing_new(
        catalog_of: CatalogOf, store_url: str, started: str) -> None:
    n = 2
    gauge = Gauge()
    release = asyncio.Event()
    entered = asyncio.Event()

    async def reserve(ctx: Any) -> Any:
        gauge.enter(ctx)
        if gauge.now == n:
            entered.set()
        await release.wait()
        gauge.leave(ctx)
        return {"reserved": ctx.run_id}

    def ship(ctx: Any) -> Any:
        gauge.enter(ctx)
        gauge.leave(ctx)
        return {}

    registry = registry_of({"reserve": reserve, "ship": ship})

    async def scenario() -> None:
        async with AsyncEngine(two_steps(catalog_of), registry, store_url) as engine:
            if started == "before work":  # nobody has claimed these runs
                ids = [(await engine.start("order", {"i": i})).id for i in range(4)]
                worker = asyncio.create_task(engine.work(concurrency=n, poll_interval=0.05))
            else:  # started while the worker runs: leased to it as they are created
                worker = asyncio.create_task(engine.work(concurrency=n, poll_interval=0.05))
                await asyncio.sleep(0.01)
                ids = [(await engine.start("order", {"i": i})).id for i in range(4)]
            await asyncio.wait_for(entered.wait(), BOUND)
            engine.stop()
            assert not worker.done()  # the steps in hand are still running
            release.set()
            await asyncio.wait_for(worker, BOUND)

            views = {i: await engine.get_run(i) for i in ids}
            in_hand = [i for i in ids if views[i].step("reserve").status == "succeeded"]
            assert len(in_hand) == n
            for i in ids:
                view = views[i]
                # Every lease is given up: another worker may carry any run on at once.
                assert (view.lease_owner, view.lease_expires) == (None, None)
                assert view.status == RunStatus.RUNNING
                # The next step of a run in hand never started, nor did other runs.
                assert view.step("ship").status == "pending"
            assert sorted(gauge.calls) == sorted((i, "reserve") for i in in_hand)
            # Nothing was lost: a later worker finishes every run.
            await engine.run_until_idle()
            finished = [(await engine.get_run(i)).status for i in ids]
            assert finished == [RunStatus.COMPLETED] * len(ids)

    run_async(scenario())


# -- where handlers run ------------------------------------------------------------------------


def test_async_handlers_run_on_the_host_loop(catalog_of: CatalogOf, store_url: str) -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[int] = []

    async def handler(ctx: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        threads.append(threading.get_ident())
        return {}

    registry = registry_of({"reserve": handler, "ship": handler})

    async def scenario() -> asyncio.AbstractEventLoop:
        async with AsyncEngine(two_steps(catalog_of), registry, store_url) as engine:
            run = await engine.start("order", {})
            await engine.run_until_idle()
            assert (await engine.get_run(run.id)).status == RunStatus.COMPLETED
            worker = asyncio.create_task(engine.work(concurrency=2, poll_interval=0.05))
            second = await engine.start("order", {})

            async def done() -> bool:
                return (await engine.get_run(second.id)).status == RunStatus.COMPLETED

            await until(done, "the worker completed the run")
            engine.stop()
            await worker
        return asyncio.get_running_loop()

    host = run_async(scenario())
    assert len(loops) == 4
    assert all(loop is host for loop in loops)
    assert set(threads) == {threading.get_ident()}  # asyncio.run runs the loop here


def test_sync_handlers_do_not_block_the_loop(catalog_of: CatalogOf, store_url: str) -> None:
    handler_threads: list[int] = []

    def slow(ctx: Any) -> Any:
        handler_threads.append(threading.get_ident())
        time.sleep(0.4)
        return {}

    registry = registry_of({"reserve": slow, "ship": lambda ctx: {}})

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with AsyncEngine(two_steps(catalog_of), registry, store_url) as engine:
            run = await engine.start("order", {})
            ticking = asyncio.create_task(ticker())
            await engine.run_until_idle()
            ticking.cancel()
            assert (await engine.get_run(run.id)).status == RunStatus.COMPLETED
        return ticks

    ticks = run_async(scenario())
    # 0.4 s of handler at 10 ms a tick: a blocked loop would tick a handful of times at
    # most (before and after); a busy 2-core machine still gets well past 10.
    assert ticks >= 10
    assert len(handler_threads) == 1
    assert handler_threads[0] != threading.get_ident()


def test_a_failing_async_handler_compensates_inside_the_loop(catalog_of: CatalogOf,
                                                            store_url: str) -> None:
    undone: list[Any] = []

    async def ship(ctx: Any) -> Any:
        raise PermanentError("no courier")

    async def undo(ctx: Any) -> None:
        undone.append(ctx.result)

    registry = registry_of({"reserve": lambda ctx: {"hold": 7}, "ship": ship},
                           {"reserve": undo})

    async def scenario() -> None:
        async with AsyncEngine(two_steps(catalog_of), registry, store_url) as engine:
            run = await engine.start("order", {})
            await engine.run_until_idle()
            view = await engine.get_run(run.id)
            assert view.status == RunStatus.COMPENSATED
            assert view.error == "step ship: PermanentError: no courier"

    run_async(scenario())
    assert undone == [{"hold": 7}]


# -- a FastAPI service -------------------------------------------------------------------------


def test_fastapi_lifespan_runs_the_worker_beside_requests(catalog_of: CatalogOf,
                                                         store_url: str) -> None:
    from fastapi import FastAPI, HTTPException
    from fastapi.testclient import TestClient

    from concordia.errors import UnknownRunError

    served: list[str] = []

    async def reserve(ctx: Any) -> Any:
        await asyncio.sleep(0.01)
        served.append(ctx.input["order_id"])
        return {"order": ctx.input["order_id"]}

    registry = registry_of({"reserve": reserve, "ship": lambda ctx: {"shipped": True}})
    engine = AsyncEngine(two_steps(catalog_of), registry, store_url)
    stopped: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        async with engine:
            worker = asyncio.create_task(engine.work(concurrency=4, poll_interval=0.05))
            yield
            engine.stop()
            await worker
            stopped.append(True)

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        run = await engine.start("order", {"order_id": order_id})
        return {"run_id": run.id}

    @app.get("/runs/{run_id}")
    async def status(run_id: str) -> dict[str, Any]:
        try:
            view = await engine.get_run(run_id)
        except UnknownRunError:
            raise HTTPException(404, f"no run {run_id}") from None
        return {"status": view.status, "results": view.results}

    with TestClient(app) as client:
        ids = [client.post(f"/orders/o-{i}").json()["run_id"] for i in range(5)]
        deadline = time.monotonic() + BOUND
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending
                       if client.get(f"/runs/{i}").json()["status"] != "completed"}
            time.sleep(0.02)
        assert not pending, "runs started by requests did not complete"
        body = client.get(f"/runs/{ids[0]}").json()
        assert body == {"status": "completed",
                        "results": {"reserve": {"order": "o-0"},
                                    "ship": {"shipped": True}}}
        assert client.get("/runs/no-such-run").status_code == 404
    assert stopped == [True]  # the lifespan's shutdown stopped the worker
    assert sorted(served) == [f"o-{i}" for i in range(5)]


def test_work_runs_again_after_a_stop(catalog_of: CatalogOf, store_url: str) -> None:
    # A service's worker restarted (a reload, a second lifespan in a test suite) on the
    # same engine: a stop answered once must not stop every later work() at once.
    registry = registry_of({"reserve": lambda ctx: {}, "ship": lambda ctx: {}})
    engine = AsyncEngine(two_steps(catalog_of), registry, store_url)
    reads: list[Any] = []
    read = engine.astore.read

    async def counted(method: str, *args: Any) -> Any:
        reads.append(method)
        return await read(method, *args)

    engine.astore.read = counted  # type: ignore[method-assign]

    async def session() -> None:
        # A long poll interval: the run completes soon only if starting it wakes the worker.
        worker = asyncio.create_task(engine.work(concurrency=2, poll_interval=5.0))
        await asyncio.sleep(0.05)
        assert not worker.done()  # working, not returned at once
        began = time.monotonic()
        run = await engine.start("order", {})

        async def done() -> bool:
            return (await engine.get_run(run.id)).status == RunStatus.COMPLETED

        await until(done, "the run completed")
        assert time.monotonic() - began < 2.5
        # Idle, the worker sleeps until its poll interval (or a wake-up): it never spins.
        reads.clear()
        await asyncio.sleep(0.3)
        assert len(reads) < 10
        engine.stop()
        await asyncio.wait_for(worker, BOUND)

    async def twice() -> None:
        await session()
        await session()

    try:
        run_async(twice())  # stopped and started again on one loop
        run_async(session())  # and on another loop (another asyncio.run)
    finally:
        run_async(engine.aclose())
