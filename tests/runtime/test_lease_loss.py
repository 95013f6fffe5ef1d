"""A worker that loses a run's lease while that run's sync handlers are in its pool stops
waiting for them and keeps its pool whole.

The lease is lost the way it is lost in production: another worker took the run over (a
commit of its own moved the run's revision on and leased it to itself) while this one
could not renew, and this worker's next renewal finds out. Then a call of that run still
queued in the pool must never start (the other worker may run it), the pass must end
(its next commit is refused), and a call that was already running must finish and give
its thread back, so the pool still serves the next run.

The async engine reacts to a lost lease (the sync engine calls its handlers inline); the
thief's commit and the renewal are made from inside a handler, so the timing is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.store.base import Store
from concordia.store.records import Commit
from tests.runtime.blocking import BlockingEngine
from tests.runtime.sagas import load_catalog

SAGAS = ["""
name: pair
version: 1
steps:
  - {name: taken, action: lease.taken, compensate: none, reason: test}
  - {name: queued, action: lease.queued, compensate: none, reason: test,
     depends_on: []}
""", """
name: single
version: 1
steps:
  - {name: taken, action: lease.taken, compensate: none, reason: test}
""", """
name: plain
version: 1
steps:
  - {name: work, action: lease.work, compensate: none, reason: test}
"""]
DEADLINE = 5.0  # seconds a pass may take here before the engine counts as hung


def steal(store: Store, run_id: str) -> None:
    """What another worker does once the lease has expired: lease the run to itself in a
    commit of its own (moving the run's revision on)."""
    loaded = store.load(run_id)
    assert loaded is not None
    run = loaded[0]
    run.lease_owner, run.lease_expires = "another-worker", time.time() + 60
    store.commit(Commit(run=run, expect_rev=run.rev))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(*SAGAS)


def make_engine(catalog: Catalog, store_url: str, called: list[str]) -> BlockingEngine:
    registry = Registry()
    holder: dict[str, BlockingEngine] = {}

    def taken(ctx: Any) -> dict[str, Any]:
        called.append(ctx.step)
        engine = holder["engine"]
        steal(engine.store, ctx.run_id)
        engine.engine.leases.renew_now()  # this worker learns it lost the lease
        return {}

    def other(ctx: Any) -> dict[str, Any]:
        called.append(ctx.step)
        return {}

    registry.add_action("lease.taken", taken)
    registry.add_action("lease.queued", other)
    registry.add_action("lease.work", other)
    # One handler thread: the pair's second call waits in the queue behind the first.
    engine = BlockingEngine(catalog, registry, store_url, clock=SystemClock(),
                            handler_threads=1, lease_ttl=30.0)
    holder["engine"] = engine
    return engine


def within_deadline(engine: BlockingEngine, coro: Coroutine[Any, Any, Any]) -> None:
    try:
        engine.loop.run_until_complete(asyncio.wait_for(coro, DEADLINE))
    except TimeoutError:
        pytest.fail(f"the pass did not end within {DEADLINE:g}s")


def test_a_queued_call_of_a_lost_run_never_starts_and_the_pass_ends(
        catalog: Catalog, store_url: str) -> None:
    called: list[str] = []
    engine = make_engine(catalog, store_url, called)
    try:
        rid = engine.start("pair").id
        within_deadline(engine, engine.engine.advance(rid))
        assert called == ["taken"]  # ``queued`` was given up on before it started
        view = engine.get_run(rid)
        assert view.lease_owner == "another-worker"  # nothing of this pass was journaled
        assert view.step("queued").status == "running"
    finally:
        engine.close()


def test_a_running_call_of_a_lost_run_gives_its_thread_back(
        catalog: Catalog, store_url: str) -> None:
    called: list[str] = []
    engine = make_engine(catalog, store_url, called)
    try:
        lost = engine.start("single").id
        within_deadline(engine, engine.engine.advance(lost))
        # The pool's one thread serves the next run.
        rid = engine.start("plain").id
        within_deadline(engine, engine.engine.advance(rid))
        assert called == ["taken", "work"]
        assert engine.get_run(rid).status == "completed"
        assert engine.engine.invoker.pool.abandoned_threads == 0
    finally:
        engine.close()
