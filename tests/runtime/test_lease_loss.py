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

A lease is not lost merely because the worker does not hold it at the moment of a
renewal: the lease keeper holds a run from the start of its pass, and a renewal that comes
before the pass's first commit takes the lease must not make the worker give up on the
calls that pass is about to make.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.store.base import Store
from concordia.store.changes import Commit, LeaseChange
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
""", """
name: healthy_pair
version: 1
steps:
  - {name: slow, action: lease.slow, compensate: none, reason: test}
  - {name: quick, action: lease.work, compensate: none, reason: test, depends_on: []}
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

    def slow(ctx: Any) -> dict[str, Any]:
        called.append(ctx.step)
        time.sleep(0.1)
        return {}

    registry.add_action("lease.taken", taken)
    registry.add_action("lease.queued", other)
    registry.add_action("lease.work", other)
    registry.add_action("lease.slow", slow)
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


class RacingStore:
    """A store whose first lease renewal of a pass lands just before the pass takes the
    lease, and reports back just after the pass handed its calls to the pool: the order
    a renewal tick and a starting pass can take in a busy worker."""

    def __init__(self, store: Store, engine: BlockingEngine) -> None:
        self._store = store
        self._engine = engine
        self._renewed = threading.Event()
        self._raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def load(self, run_id: str) -> Any:
        if not self._raced:  # the pass's first read: the renewal tick comes now
            self._raced = True
            threading.Thread(target=self._engine.engine.leases.renew_now).start()
            assert self._renewed.wait(DEADLINE)
        return self._store.load(run_id)

    def leases(self, change: LeaseChange) -> list[str]:
        kept: list[str] = self._store.leases(change)
        self._renewed.set()
        run_ids = change.run_ids or ()
        deadline = time.monotonic() + DEADLINE
        while not any(c.ctx.run_id in run_ids for c in self._engine.engine.invoker.in_flight):
            assert time.monotonic() < deadline, "the pass never called its handlers"
            time.sleep(0.001)
        return kept


def test_a_renewal_racing_the_first_commit_of_a_pass_does_not_take_the_run_for_lost(
        catalog: Catalog, store_url: str) -> None:
    called: list[str] = []
    engine = make_engine(catalog, store_url, called)
    try:
        rid = engine.start("healthy_pair").id
        engine.store = RacingStore(engine.store, engine)  # type: ignore[assignment]
        within_deadline(engine, engine.engine.advance(rid))
        view = engine.get_run(rid)
        assert sorted(called) == ["quick", "slow"], view.error
        assert view.status == "completed", view.error
    finally:
        engine.close()
