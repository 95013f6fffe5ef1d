"""A poison run fails visibly and alone: the healthy runs beside it complete, the worker
lives on (unless a handler asks it to stop, and then it says which run), and no handler
is called for a run once it has ended.

The faults (:mod:`tests.runtime.poison`): an emit mapping and a policy input that raise,
a 100,000-deep and a NaN result, an async handler raising ``TimeoutError`` itself, a
custom ``BaseException``, exceptions with a 30 MiB message or an unreadable one,
``KeyboardInterrupt`` and ``SystemExit``, an async handler that blocks the event loop past
its step timeout, and more hanging sync handlers than the handler pool has threads.

- In process (quick): each fault beside healthy runs on the sync and the async engine,
  on the memory and the SQLite store.
- Under ``concordia worker`` (slow), on SQLite and PostgreSQL: each fault beside 20
  healthy runs, started
  beforehand by an engine that does not claim them; every handler call's start time is
  written to a side log and compared with its run's final ``updated_at``.
- An async handler that swallows its cancellation is given up on shortly after its
  timeout, not when it chooses to return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.views import RunView
from concordia.status import ENDED
from concordia.store import open_store
from tests.pg import drop_schema
from tests.runtime import poison
from tests.runtime.blocking import BlockingEngine
from tests.runtime.conftest import store_url_for
from tests.runtime.poison import FAULTS, HEALTHY, Fault
from tests.runtime.sagas import load_catalog, write_definitions
from tests.runtime.workers import WorkerProcess, read_side_log, stop_all, wait_until

EngineFor = Callable[..., Engine]

# How long the blocking and hanging handlers take: in process, just over their 0.2 s
# step timeout; in a worker, long enough for the loop watchdog (1 s) to see the block.
SECONDS_IN_PROCESS = {"blocked_loop": 0.4, "saturated_pool": 0.5}
SECONDS_IN_WORKER = {"blocked_loop": 1.5, "saturated_pool": 2.0}
HEALTHY_IN_PROCESS = 4
# The most text of an error the journal may keep (a handler's exception message can be
# any size; the journal keeps a bounded part of it).
ERROR_BOUND = 20_000
HEALTHY_IN_WORKER = 20
POOL_THREADS = 16  # the handler pool of `concordia worker` (the engines' default)


def poison_input(saga: str, seconds: dict[str, float]) -> dict[str, Any]:
    return {"seconds": seconds[saga]} if saga in seconds else {}


def check_poison_run(view: RunView, fault: Fault, calls: list[dict[str, Any]]) -> None:
    """The run ended as the fault leads, with the error recorded (and bounded) on the run
    and its step, the faulty step called as often as its retry policy says, and exactly
    the expected compensations called."""
    assert view.status == fault.status, (view.status, view.error)
    for error in (view.error, *(view.step(s).error for s in fault.steps)):
        assert error is not None
        assert fault.error in error, error[:ERROR_BOUND]
        assert len(error) <= ERROR_BOUND, f"{len(error)} characters: {error[:200]}..."
    assert max(len(json.dumps(h.detail)) for h in view.history) <= ERROR_BOUND
    for step in fault.steps:
        assert view.step(step).status == "failed"
        tried = [c["attempt"] for c in calls if c["phase"] == "action" and c["step"] == step]
        assert tried == list(range(1, fault.attempts + 1)), (step, tried)
    undone = [c["step"] for c in calls if c["phase"] == "compensation"]
    assert undone == list(fault.undone), undone
    assert view.compensated_steps() == list(fault.undone)


def check_healthy_run(view: RunView) -> None:
    assert view.status == "completed", (view.id, view.status, view.error)
    assert view.results == {s: {"step": s, "run": view.id} for s in ("one", "two")}


def check_no_call_after_end(view: RunView, calls: list[dict[str, Any]]) -> None:
    """No handler of the run started after the commit that ended it."""
    assert view.status in ENDED
    late = [c for c in calls if "start" in c and c["start"] > view.updated_at]
    assert late == [], (view.id, view.updated_at, late)


def wait_for_hanging_calls(calls: list[dict[str, Any]]) -> None:
    """Until every hanging call has returned and its pool thread has ended, so none
    outlives its test."""
    wait_until(lambda: sum(c["phase"] == "returned" for c in calls)
               == sum(c["phase"] == "action" and c["step"].startswith("hang") for c in calls),
               10, "the hanging calls returning", interval=0.02)
    threads = [c["thread"] for c in calls if c["phase"] == "returned"]
    wait_until(lambda: not any(t.is_alive() for t in threads), 10,
               "the hanging calls' threads ending", interval=0.02)


# -- in process: the sync and the async engine, memory and SQLite ----------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(*poison.documents())


@pytest.mark.parametrize("saga", [s for s, f in FAULTS.items() if not f.stops_worker])
def test_poison_fails_alone_in_process(engine_for: EngineFor, catalog: Catalog,
                                       saga: str) -> None:
    fault = FAULTS[saga]
    calls: list[dict[str, Any]] = []
    # A pool of 2 threads: the saturated_pool saga's 3 hanging calls are more than it holds.
    engine = engine_for(catalog, poison.build_registry(calls.append), clock=SystemClock(),
                        handler_threads=2)
    healthy = [engine.start(HEALTHY).id for _ in range(HEALTHY_IN_PROCESS // 2)]
    bad = engine.start(saga, poison_input(saga, SECONDS_IN_PROCESS)).id
    healthy += [engine.start(HEALTHY).id for _ in range(HEALTHY_IN_PROCESS // 2)]
    engine.drain(max_wait=5.0)

    view = engine.get_run(bad)
    mine = [c for c in calls if c["run"] == bad]
    check_poison_run(view, fault, mine)
    check_no_call_after_end(view, mine)
    for rid in healthy:
        check_healthy_run(engine.get_run(rid))
        check_no_call_after_end(engine.get_run(rid), [c for c in calls if c["run"] == rid])
    # Nothing is left to do: another pass calls no handler. (A hanging call abandoned by
    # its timeout may still note that it "returned" meanwhile: that is not a call.)
    def made() -> int:
        return sum(c["phase"] != "returned" for c in calls)

    before = made()
    assert engine.run_until_idle() == 0
    assert made() == before
    if saga == "saturated_pool":  # 3 calls at once on 2 threads: the third waited its turn
        assert peak_counted(calls, 0.2) == 2
    wait_for_hanging_calls(calls)


def test_a_call_returning_after_its_engine_closed_ends_quietly(
        engine_kind: str, store_url: str, catalog: Catalog,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync call abandoned by its timeout runs on in its pool thread; when it returns
    after the engine (and its event loop) closed, nobody waits for it any more: the
    thread ends without an error."""
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    calls: list[dict[str, Any]] = []
    kind = Engine if engine_kind == "sync" else BlockingEngine
    engine = kind(catalog, poison.build_registry(calls.append), store_url,
                  clock=SystemClock(), handler_threads=2)
    try:
        bad = engine.start("saturated_pool", {"seconds": 0.3}).id
        engine.drain(max_wait=5.0)
        assert engine.get_run(bad).status == "compensated"
    finally:
        engine.close()
    wait_for_hanging_calls(calls)
    assert crashed == []


STUBBORN = """
name: stubborn
version: 1
steps:
  - {name: deaf, action: stubborn.deaf, compensate: none, reason: test, timeout: 200ms}
"""
STUBBORN_FOR = 4.0  # seconds the handler below ignores its cancellation


@pytest.mark.parametrize("engine_kind", ["sync", "async"])
def test_an_async_handler_ignoring_its_cancellation_is_reported_then_given_up_on(
        engine_kind: str, catalog_of: Callable[..., Catalog]) -> None:
    from concordia.runtime import invoke

    invoke._ISOLATED.discard("stubborn.deaf")  # as in a fresh worker

    async def deaf(ctx: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        until = loop.time() + STUBBORN_FOR
        while loop.time() < until:
            with contextlib.suppress(asyncio.CancelledError):  # the fault
                await asyncio.sleep(0.01)
        return {}

    registry = Registry()
    registry.add_action("stubborn.deaf", deaf)
    kind = Engine if engine_kind == "sync" else BlockingEngine
    took = []
    with structlog.testing.capture_logs() as logs, kind(
            catalog_of(STUBBORN), registry, "memory://", clock=SystemClock()) as engine:
        runs = [engine.start("stubborn").id for _ in range(2)]
        for rid in runs:
            began = time.monotonic()
            engine.advance(rid)
            took.append(time.monotonic() - began)
        views = [engine.get_run(rid) for rid in runs]
    for view in views:
        assert view.status == "failed"
        assert view.error is not None
        assert "timeout of 0.2s" in view.error
    # The first offence is waited for (it ran in the pass's own task) and reported by name;
    # from then on the handler runs where it can be abandoned soon after its timeout.
    reported = [e for e in logs if e["event"] == "handler.ignores_cancellation"]
    assert [e["handler"].split()[1] for e in reported] == [runs[0]]
    assert took[0] >= STUBBORN_FOR * 0.9
    assert took[1] < STUBBORN_FOR / 2, f"the second pass waited {took[1]:.2f}s"


@pytest.mark.parametrize("saga", [s for s, f in FAULTS.items() if f.stops_worker])
def test_a_handler_asking_to_stop_fails_its_attempt_and_names_its_run_in_process(
        engine_for: EngineFor, catalog: Catalog, saga: str) -> None:
    fault = FAULTS[saga]
    calls: list[dict[str, Any]] = []
    engine = engine_for(catalog, poison.build_registry(calls.append), clock=SystemClock())
    healthy = [engine.start(HEALTHY).id for _ in range(HEALTHY_IN_PROCESS // 2)]
    bad = engine.start(saga).id
    healthy += [engine.start(HEALTHY).id for _ in range(HEALTHY_IN_PROCESS // 2)]
    with pytest.raises(HandlerStopError) as stopped:
        engine.drain(max_wait=5.0)
    assert stopped.value.run_id == bad
    assert stopped.value.step == fault.steps[0]
    assert bad in str(stopped.value)
    # The attempt is journaled as failed for good before the engine stops.
    assert engine.get_run(bad).step(fault.steps[0]).status == "failed"
    engine.drain(max_wait=5.0)  # carries on: the run compensates, the others complete

    view = engine.get_run(bad)
    mine = [c for c in calls if c["run"] == bad]
    check_poison_run(view, fault, mine)
    assert [c["step"] for c in mine if c["phase"] == "action"] == ["prep", *fault.steps]
    for rid in healthy:
        check_healthy_run(engine.get_run(rid))


# -- under `concordia worker` -----------------------------------------------------------------


def poison_runs(fault: Fault) -> int:
    if fault.stops_worker:
        return 1
    # 8 runs of 3 hanging calls: 24 calls, more than the worker's 16 handler threads.
    return 8 if fault.saga == "saturated_pool" else 3


def worker_concurrency(fault: Fault) -> int:
    return 10 if fault.saga == "saturated_pool" else 4


def creation_order(fault: Fault) -> list[bool]:
    """Which runs to create, in order (True: a poison run). The poison runs sit among the
    healthy ones, so they are in flight together; the hanging runs come first, so that
    all of them hang at once."""
    if fault.saga == "saturated_pool":
        return [True] * poison_runs(fault) + [False] * HEALTHY_IN_WORKER
    order = []
    for i in range(HEALTHY_IN_WORKER):
        order.append(False)
        if i % 3 == 1 and sum(order) < poison_runs(fault):
            order.append(True)
    return order + [True] * (poison_runs(fault) - sum(order))


def create_runs(tmp_path: Path, fault: Fault, store: str
                ) -> tuple[Path, list[str], list[str]]:
    definitions = tmp_path / "definitions"
    write_definitions(definitions, *poison.documents())
    healthy: list[str] = []
    bad: list[str] = []
    with Engine(Catalog.load_strict([str(definitions)]), poison.registry, store,
                clock=SystemClock(), claim_new_runs=False) as engine:
        for is_poison in creation_order(fault):
            if is_poison:
                bad.append(engine.start(fault.saga, poison_input(fault.saga, SECONDS_IN_WORKER),
                                        run_id=f"poison-{len(bad):02d}").id)
            else:
                healthy.append(engine.start(HEALTHY, run_id=f"healthy-{len(healthy):02d}").id)
    return definitions, healthy, bad


def peak_counted(side: list[dict[str, Any]], timeout: float) -> int:
    """The most hanging calls the pool counted at once: a call counts from its start
    until its timeout abandons it (a lower bound of the pool's own count, which starts a
    little earlier and ends a little later)."""
    edges = sorted(edge for c in side if c["phase"] == "action" and c["step"].startswith("hang")
                   for edge in ((c["start"], 1), (c["start"] + timeout, -1)))
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def all_ended(store: str, total: int) -> bool:
    reader = open_store(store, readonly=True)
    try:
        return sum(r.status in ENDED for r in reader.list_runs(limit=2 * total)) == total
    finally:
        reader.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def worker_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The workers' store: a SQLite file, or a PostgreSQL schema of the test's own."""
    url = store_url_for(request.param, tmp_path)
    yield url
    if request.param == "postgres":
        drop_schema(url.rsplit("schema=", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("saga", list(FAULTS))
def test_poison_fails_alone_under_the_worker(tmp_path: Path, saga: str,
                                             worker_store: str) -> None:
    fault = FAULTS[saga]
    store = worker_store
    definitions, healthy, bad = create_runs(tmp_path, fault, store)
    total = len(healthy) + len(bad)
    env = {"POISON_SIDE_LOG": str(tmp_path / "side.log")}

    def start(generation: int) -> WorkerProcess:
        return WorkerProcess(store, "tests.runtime.poison", definitions, tmp_path,
                             concurrency=worker_concurrency(fault), lease_ttl=1.0, env=env,
                             name=f"worker-{generation}")

    workers = [start(0)]
    stops: list[str] = []  # the messages of the workers that stopped
    try:
        while True:
            worker = workers[-1]
            wait_until(lambda: all_ended(store, total) or not worker.alive(), 60,  # noqa: B023
                       f"{saga}: every run ending", interval=0.1)
            if worker.alive():
                break
            # Only a handler's KeyboardInterrupt/SystemExit may end the worker: exit 1
            # and a line naming the run; restarted, it carries on.
            code = worker.wait(10)
            err = worker.stderr()
            assert fault.stops_worker, (code, err)
            assert len(stops) < len(bad), (code, err)
            assert code == 1, err
            [line] = [ln for ln in err.splitlines() if ln.startswith("concordia worker: stopped")]
            assert any(f"run {rid}" in line for rid in bad), line
            stops.append(line)
            workers.append(start(len(workers)))
        worker = workers[-1]
        assert worker.terminate() == 0, worker.stderr()
    finally:
        stop_all(workers)
    assert len(stops) == (len(bad) if fault.stops_worker else 0)

    side = read_side_log(tmp_path / "side.log")
    with Engine(Catalog.load_strict([str(definitions)]), poison.registry,
                open_store(store, readonly=True), check_bindings=False) as reader:
        for rid in healthy:
            view = reader.get_run(rid)
            check_healthy_run(view)
            check_no_call_after_end(view, [c for c in side if c["run"] == rid])
        for rid in bad:
            view = reader.get_run(rid)
            mine = [c for c in side if c["run"] == rid]
            check_poison_run(view, fault, mine)
            check_no_call_after_end(view, mine)
            if fault.stops_worker:  # failed for good: never called again after the restart
                assert Counter(c["step"] for c in mine if c["phase"] == "action") == {
                    "prep": 1, fault.steps[0]: 1}
    logs = "".join(w.stderr() for w in workers)
    if saga == "blocked_loop":
        assert '"event": "event_loop.blocked"' in logs, logs[-2000:]
    if saga == "saturated_pool":
        # More calls hung than the pool has threads (16), and it never ran more at once.
        assert peak_counted(side, 0.2) == POOL_THREADS
    print(f"\n{saga}: {len(healthy)} healthy runs completed, {len(bad)} poison runs "
          f"{view.status}, {sum('start' in c for c in side)} handler calls, "
          f"{len(workers)} worker process(es), "
          f"error: {(view.error or '')[:100]}")
