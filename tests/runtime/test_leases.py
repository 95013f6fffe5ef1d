"""Leases: one owner per run, on the memory and SQLite stores, sync and async engines.

Two engines with different ``owner`` names share one store. They prove that a run leased
to one is left alone by the other until the lease expires, then carried on with the
started attempt's number and idempotency key, and that the expired owner's late commit is
refused, so nothing is journaled twice; that ``LeaseKeeper`` renews the leases of a slow
handler so no takeover happens; that a cancellation asked of another worker's run is
applied by that worker once its current step ends; that ``claim_new_runs=False`` leaves
new runs unleased and closing an engine gives up the leases it took on creation; that
``engine.retry`` resumes a ``stuck`` run; that ``due_runs`` never offers a run another
owner holds; and that the group writer commits many runs' writes in one transaction
where a refused write undoes only itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog

from concordia.clock import SystemClock, VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import ConcordiaError
from concordia.registry import Registry
from concordia.runtime import transitions
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.engine import Engine
from concordia.runtime.leases import LeaseKeeper
from concordia.status import RunStatus
from concordia.store import open_store
from concordia.store.aio import AsyncStore
from concordia.store.base import ConflictError, Store
from concordia.store.changes import Commit
from concordia.store.memory import MemoryStore
from concordia.store.records import RunRecord
from tests.journal import records_of
from tests.runtime.sagas import action, saga

CatalogOf = Callable[..., Catalog]
EngineFor = Callable[..., Engine]
BOUND = 20.0  # every wait is bounded: a broken engine fails a test, never hangs it
TTL = 60.0  # virtual seconds; the keeper's beat (TTL / 3 real seconds) never comes


def order_saga(catalog_of: CatalogOf) -> Catalog:
    return catalog_of(saga("order", [
        action("charge", retry={"attempts": 3, "backoff": {"initial": "10s", "jitter": 0}}),
        action("ship")]))


@dataclass
class Worker:
    """One engine's handlers: what they saw, and a gate a charge attempt can block on."""

    name: str
    block_attempt: int | None = None  # this attempt of charge waits for ``release``
    fail_attempt: int | None = None  # this attempt of charge fails (retryably)
    sleep: float = 0.0
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def registry(self) -> Registry:
        registry = Registry()
        registry.add_action("charge.do", self.charge)
        registry.add_action("ship.do", self.ship)
        registry.add_compensation("charge.undo", lambda ctx: self.undone.append("charge"))
        registry.add_compensation("ship.undo", lambda ctx: self.undone.append("ship"))
        return registry

    def charge(self, ctx: Any) -> Any:
        self.calls.append(("charge", ctx.attempt, ctx.idempotency_key))
        if ctx.attempt == self.fail_attempt:
            raise ConnectionError("gateway down")
        if ctx.attempt == self.block_attempt:
            self.entered.set()
            if not self.release.wait(BOUND):
                raise AssertionError("the test never released this handler")
        time.sleep(self.sleep)
        return {"charged_by": self.name}

    def ship(self, ctx: Any) -> Any:
        self.calls.append(("ship", ctx.attempt, ctx.idempotency_key))
        return {"shipped_by": self.name}


@pytest.fixture
def two_engines(engine_for: EngineFor, store_url: str
                ) -> Iterator[Callable[..., tuple[Engine, Engine]]]:
    """Two engines, owners ``worker-a`` and ``worker-b``, on one store: the same memory
    store object, or two connections to one SQLite file (as two processes would have)."""
    workers: list[Worker] = []

    def make(catalog: Catalog, a: Worker, b: Worker, **settings: Any
             ) -> tuple[Engine, Engine]:
        workers.extend((a, b))
        shared: Store | str = MemoryStore() if store_url.startswith("memory") else store_url
        first = engine_for(catalog, a.registry(), store=shared, owner="worker-a", **settings)
        second = engine_for(catalog, b.registry(), store=shared, owner="worker-b",
                            **settings)
        return first, second

    yield make
    for worker in workers:  # a failed test must not leave a handler blocking the close
        worker.release.set()
    for call in Background.started:
        call.thread.join(BOUND)
    Background.started.clear()


def stop_renewing(engine: Any) -> None:
    """Silence an engine's lease keeper, sync engine or async one behind the facade."""
    keeper = getattr(engine, "_leases", None) or engine.engine.leases
    keeper.close()


class Background:
    """Runs a blocking call in a thread and hands back its error, if any."""

    started: ClassVar[list[Background]] = []  # joined by ``two_engines`` before engines close

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        Background.started.append(self)

        def target() -> None:
            try:
                fn()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "the background call did not return"
        if self.error is not None:
            raise self.error


def kinds(view: Any, kind: str, step: str | None = None) -> list[Any]:
    return [h for h in view.history if h.kind == kind and (step is None or h.step == step)]


# -- one owner at a time -----------------------------------------------------------------------


def test_a_leased_run_waits_for_its_lease_to_expire_then_is_carried_on_once(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]],
        clock: VirtualClock) -> None:
    a_side = Worker("a", fail_attempt=1, block_attempt=2)
    b_side = Worker("b")
    a, b = two_engines(order_saga(catalog_of), a_side, b_side, lease_ttl=TTL)
    run = a.start("order", {})
    key = f"{run.id}:charge"
    a.run_until_idle()  # attempt 1 fails: a retry in 10 s
    assert b.get_run(run.id).status == RunStatus.WAITING

    clock.advance(10)
    held = Background(a.run_until_idle)  # attempt 2 starts, then a "hangs" in it
    assert a_side.entered.wait(BOUND)
    stop_renewing(a)  # as a dead worker would: on a slow machine its beat might come
    view = b.get_run(run.id)
    assert view.lease_owner == "worker-a"
    assert view.step("charge").status == "running"
    assert view.step("charge").attempt == 2

    # b leaves it alone while the lease lasts: not offered, not advanced, not timed.
    assert run.id not in b.store.due_runs(clock.now(), 100, "worker-b")
    wake = b.store.next_wake_at()
    assert wake is not None
    assert wake > clock.now()  # a worker waiting for it sleeps until the lease expires
    assert b.run_until_idle() == 0
    b.advance(run.id)
    assert b_side.calls == []
    assert len(b.get_run(run.id).history) == len(view.history)

    clock.advance(TTL + 1)  # a's lease expires (a never renewed it: a died, say)
    b.run_until_idle()
    view = b.get_run(run.id)
    assert view.status == RunStatus.COMPLETED, view.error
    # The started attempt re-runs: the same number and idempotency key, not attempt 3.
    assert b_side.calls == [("charge", 2, key), ("ship", 1, f"{run.id}:ship")]
    assert view.step("charge").attempt == 2
    assert view.results["charge"] == {"charged_by": "b"}

    # a comes back from its call: its commit is refused, and a moves on.
    with structlog.testing.capture_logs() as logs:
        a_side.release.set()
        held.join()
    assert [e["run_id"] for e in logs if e["event"] == "advance.conflict"] == [run.id]
    assert a_side.calls == [("charge", 1, key), ("charge", 2, key)]  # never ship
    after = b.get_run(run.id)
    assert after.history == view.history  # nothing of a's late attempt was journaled
    assert len(kinds(after, "step.succeeded", "charge")) == 1
    assert len(kinds(after, "step.succeeded", "ship")) == 1
    assert len(kinds(after, "run.completed")) == 1
    assert after.results["charge"] == {"charged_by": "b"}


def test_the_expired_owners_late_commit_raises_conflict_in_the_store(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]],
        clock: VirtualClock) -> None:
    # The same race at the store: the commit a's pass would write, refused as a whole.
    a, b = two_engines(order_saga(catalog_of), Worker("a"), Worker("b"), lease_ttl=TTL,
                       claim_new_runs=True)
    run = a.start("order", {})  # leased to a, charge started, by the creating commit
    loaded = a.store.load(run.id)
    assert loaded is not None
    stale, steps, _ = loaded
    clock.advance(TTL + 1)
    b.run_until_idle()
    assert b.get_run(run.id).status == RunStatus.COMPLETED
    before = b.get_run(run.id).history
    steps["charge"].result = {"charged_by": "a"}
    with pytest.raises(ConflictError):
        a.store.commit(Commit(run=stale, steps=[steps["charge"]], expect_rev=stale.rev))
    assert b.get_run(run.id).history == before
    assert b.get_run(run.id).results["charge"] == {"charged_by": "b"}


def test_lease_keeper_renews_a_slow_handlers_lease_so_no_one_takes_over(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]]) -> None:
    # The handler outlives three leases: only renewal keeps it (a beat every ttl / 3 leaves
    # a busy machine two thirds of a lease of slack).
    ttl, slow = 0.5, 1.6
    a_side = Worker("a", block_attempt=1)
    b_side = Worker("b")
    a, b = two_engines(order_saga(catalog_of), a_side, b_side, lease_ttl=ttl,
                       clock=SystemClock())
    run = a.start("order", {})
    held = Background(lambda: a.advance(run.id))
    assert a_side.entered.wait(BOUND)
    expiries: set[float] = set()
    deadline = time.monotonic() + slow
    while time.monotonic() < deadline:
        b.run_until_idle()  # another worker polling all along
        view = b.store.get_run(run.id)
        assert view is not None
        assert view.lease_owner == "worker-a"
        assert view.lease_expires is not None
        assert view.lease_expires > time.time()  # never lapsed
        expiries.add(view.lease_expires)
        time.sleep(0.03)
    a_side.release.set()
    held.join()
    assert b_side.calls == []  # no takeover
    assert len(expiries) >= 3  # renewed again and again
    view = b.get_run(run.id)
    assert view.status == RunStatus.COMPLETED, view.error
    assert [c[:2] for c in a_side.calls] == [("charge", 1), ("ship", 1)]
    assert view.lease_owner is None  # the pass ended: the lease is given up


def test_lease_keeper_renews_what_is_held_and_reports_what_was_lost() -> None:
    renewed: list[list[str]] = []
    lost: list[str] = []
    kept = {"r1"}

    def renew(run_ids: list[str]) -> list[str]:
        renewed.append(sorted(run_ids))
        if "boom" in run_ids:
            raise OSError("store unreachable")
        return [r for r in run_ids if r in kept]

    keeper = LeaseKeeper(renew, ttl=0.06, on_lost=lost.append)
    keeper.hold("r1")
    keeper.hold("r1")  # two passes over one run (a pass and a retry call): counted
    keeper.hold("r2")
    deadline = time.monotonic() + BOUND
    while not lost and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ["r1", "r2"] in renewed  # the thread's own beat renews every lease held
    assert lost[0] == "r2"  # another worker took r2 over
    assert "r1" not in lost
    keeper.release("r1")
    assert sorted(keeper.held()) == ["r1", "r2"]  # r1 still held once
    keeper.release("r1")
    keeper.release("r2")
    assert keeper.held() == []
    keeper.hold("boom")
    keeper.renew_now()  # an unreachable store is retried on the next beat, not raised
    keeper.close()
    time.sleep(0.1)
    beats = len(renewed)
    time.sleep(0.1)
    assert len(renewed) == beats  # closed: no more beats


# -- cancelling a run someone else holds -------------------------------------------------------


def test_cancel_of_a_run_another_worker_holds_is_applied_after_its_current_step(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]]) -> None:
    a_side = Worker("a", block_attempt=1)
    b_side = Worker("b")
    a, b = two_engines(order_saga(catalog_of), a_side, b_side, lease_ttl=TTL)
    run = a.start("order", {})
    held = Background(lambda: a.advance(run.id))
    assert a_side.entered.wait(BOUND)

    asked = b.cancel(run.id, "customer changed their mind")
    # b only asked: the run is a's until its step ends.
    assert asked.status == RunStatus.RUNNING
    assert b_side.calls == []
    assert b_side.undone == []
    assert len(kinds(asked, "run.cancel_requested")) == 1

    a_side.release.set()
    held.join()
    view = b.get_run(run.id)
    assert view.status == RunStatus.CANCELLED
    assert view.error == "cancelled: customer changed their mind"
    # a finished charge, then saw the cancellation: ship never ran, charge was undone.
    assert [c[0] for c in a_side.calls] == ["charge"]
    assert a_side.undone == ["charge"]
    assert view.step("ship").status in ("pending", "abandoned")
    assert view.lease_owner is None


# -- claiming new runs -------------------------------------------------------------------------


def test_claim_new_runs_false_leaves_new_runs_unleased(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]]) -> None:
    b_side = Worker("b")
    a, b = two_engines(order_saga(catalog_of), Worker("a"), b_side, lease_ttl=TTL,
                       claim_new_runs=False)
    run = a.start("order", {})
    stored = b.store.get_run(run.id)
    assert stored is not None
    assert (stored.lease_owner, stored.lease_expires) == (None, None)
    assert records_of(b.store, run.id) == {}  # nothing started on its behalf
    b.run_until_idle()  # free for any worker at once, without waiting for a lease
    assert b.get_run(run.id).status == RunStatus.COMPLETED
    assert [c[:2] for c in b_side.calls] == [("charge", 1), ("ship", 1)]


def test_by_default_the_sync_engine_claims_and_the_idle_async_engine_does_not(
        catalog_of: CatalogOf, engine_for: EngineFor, engine_kind: str) -> None:
    engine = engine_for(order_saga(catalog_of), Worker("a").registry(), owner="worker-a")
    run = engine.start("order", {})
    stored = engine.store.get_run(run.id)
    assert stored is not None
    # The async engine claims only while its work() runs (an API beside workers).
    assert stored.lease_owner == ("worker-a" if engine_kind == "sync" else None)


def test_closing_an_engine_gives_up_the_leases_of_runs_it_claimed_but_never_drove(
        catalog_of: CatalogOf, two_engines: Callable[..., tuple[Engine, Engine]]) -> None:
    b_side = Worker("b")
    a, b = two_engines(order_saga(catalog_of), Worker("a"), b_side, lease_ttl=TTL,
                       claim_new_runs=True)
    driven = a.start("order", {})
    left = [a.start("order", {}).id for _ in range(2)]
    a.advance(driven.id)
    for run_id in left:
        stored = b.store.get_run(run_id)
        assert stored is not None
        assert stored.lease_owner == "worker-a"
    a.close()
    for run_id in left:
        stored = b.store.get_run(run_id)
        assert stored is not None
        assert (stored.lease_owner, stored.lease_expires) == (None, None)
    b.run_until_idle()  # at once: no lease to wait out
    assert [b.get_run(r).status for r in left] == [RunStatus.COMPLETED] * 2
    # The started attempt (by the creating commit) is the one that runs.
    assert sorted(c[:2] for c in b_side.calls if c[0] == "charge") == [("charge", 1)] * 2


# -- halted runs -------------------------------------------------------------------------------


def test_retry_resumes_a_stuck_run(catalog_of: CatalogOf, engine_for: EngineFor,
                                   clock: VirtualClock) -> None:
    side = Worker("a", fail_attempt=1)
    engine = engine_for(order_saga(catalog_of), side.registry(), owner="worker-a")
    run = engine.start("order", {})
    engine.run_until_idle()  # charge waits on its retry timer
    engine.store.patch(transitions.park(run.id, "operator", "disk full", clock.now()))
    view = engine.get_run(run.id)
    assert view.status == RunStatus.STUCK
    assert view.error == "disk full"
    clock.advance(60)
    assert engine.run_until_idle() == 0  # a halted run is nobody's work
    assert run.id not in engine.store.due_runs(clock.now(), 100, None)

    resumed = engine.retry(run.id)
    assert resumed.status == RunStatus.COMPLETED, resumed.error
    assert [c[:2] for c in side.calls] == [("charge", 1), ("charge", 2), ("ship", 1)]
    assert len(kinds(resumed, "run.stuck")) == 1
    assert len(kinds(resumed, "run.retried")) == 1
    with pytest.raises(ConcordiaError, match="only a run in compensation_failed or stuck"):
        engine.retry(run.id)


# -- due runs ----------------------------------------------------------------------------------

T = 1_800_000_000.0

DUE_ROWS = [
    # (run id, status, wake_at, lease owner, lease expires)
    ("a-free", RunStatus.RUNNING, None, None, None),
    ("b-held-by-a", RunStatus.RUNNING, None, "worker-a", T + 30),
    ("c-held-by-b", RunStatus.RUNNING, None, "worker-b", T + 30),
    ("d-expired", RunStatus.RUNNING, None, "worker-a", T - 1),
    ("e-expires-now", RunStatus.RUNNING, None, "worker-a", T),
    ("f-timer-due", RunStatus.WAITING, T - 5, None, None),
    ("g-timer-later", RunStatus.WAITING, T + 5, None, None),
    ("h-await-deadline", RunStatus.SUSPENDED, T - 1, None, None),
    ("i-await-no-deadline", RunStatus.SUSPENDED, None, None, None),
    ("j-completed", RunStatus.COMPLETED, None, None, None),
    ("k-stuck", RunStatus.STUCK, None, None, None),
]


@pytest.fixture
def due_store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    for run_id, status, wake_at, owner, expires in DUE_ROWS:
        store.create(Commit(run=RunRecord(
            id=run_id, saga="order", version=1, status=status,
            state="run_0" if status != RunStatus.COMPLETED else "completed", input={},
            correlation_id="c", causation_id=None, cause=run_id, created_at=T - 100,
            updated_at=T - 100, wake_at=wake_at, lease_owner=owner, lease_expires=expires)))
    yield store
    store.close()


@pytest.mark.parametrize(("owner", "expected"), [
    ("worker-a", ["a-free", "b-held-by-a", "d-expired", "e-expires-now", "f-timer-due",
                  "h-await-deadline"]),
    ("worker-b", ["a-free", "c-held-by-b", "d-expired", "e-expires-now", "f-timer-due",
                  "h-await-deadline"]),
    ("worker-c", ["a-free", "d-expired", "e-expires-now", "f-timer-due",
                  "h-await-deadline"]),
    (None, ["a-free", "b-held-by-a", "c-held-by-b", "d-expired", "e-expires-now",
            "f-timer-due", "h-await-deadline"]),
])
def test_due_runs_never_offers_a_run_another_owner_holds(
        due_store: Store, owner: str | None, expected: list[str]) -> None:
    due = due_store.due_runs(T, 100, owner)
    # Running runs first, then timers, earliest first.
    assert due == expected
    assert due_store.due_runs(T, 2, owner) == expected[:2]


def test_next_wake_at_is_the_earliest_timer_or_lease_expiry(due_store: Store) -> None:
    assert due_store.next_wake_at() == T - 5  # the due timer, before any lease expiry
    due_store.leases(transitions.release("worker-a", ["b-held-by-a"]))
    held = due_store.get_run("b-held-by-a")
    assert held is not None
    assert (held.lease_owner, held.lease_expires) == (None, None)
    assert due_store.leases(transitions.renew("worker-b", ["c-held-by-b", "b-held-by-a"],
                                              T + 90)) == [
        "c-held-by-b"]  # only the leases it holds


# -- the group writer --------------------------------------------------------------------------


def creating(commit: Commit) -> Callable[[Store], None]:
    return lambda s: s.create(commit)


def new_run(run_id: str) -> Commit:
    return Commit(run=RunRecord(
        id=run_id, saga="order", version=1, status=RunStatus.RUNNING, state="run_0",
        input={}, correlation_id="c", causation_id=None, cause=run_id, created_at=T,
        updated_at=T))


def test_group_writer_commits_many_writes_in_one_transaction_and_refusals_alone(
        tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    astore = AsyncStore(store)
    assert astore.writer is not None
    store.create(new_run("existing"))

    def half_written(s: Store) -> None:
        s.create(new_run("half"))
        raise RuntimeError("failed after writing")

    async def scenario() -> list[Any]:
        gate = threading.Event()

        def hold_the_writer(s: Store) -> str:
            gate.wait(BOUND)
            return "first"

        first = asyncio.ensure_future(astore.write(hold_the_writer))
        await asyncio.sleep(0.1)  # the writer thread has taken it, alone, and waits
        writes = [astore.write(creating(new_run(f"r{i}"))) for i in range(4)]
        writes.insert(2, astore.write(creating(new_run("existing"))))
        writes.insert(4, astore.write(half_written))
        pending = [asyncio.ensure_future(w) for w in writes]
        await asyncio.sleep(0.05)  # all queued behind the first
        gate.set()
        return list(await asyncio.wait_for(
            asyncio.gather(first, *pending, return_exceptions=True), BOUND))

    try:
        outcomes = asyncio.run(scenario())
        writer = astore.writer
        assert (writer.batches, writer.writes) == (2, 7)  # six writes shared one batch
        assert outcomes[0] == "first"
        assert isinstance(outcomes[3], ConflictError)  # "existing" already exists
        assert isinstance(outcomes[5], RuntimeError)
        assert [o for i, o in enumerate(outcomes) if i not in (0, 3, 5)] == [None] * 4
        # The refused writes undid only themselves.
        assert [store.get_run(f"r{i}") is not None for i in range(4)] == [True] * 4
        assert store.get_run("half") is None
    finally:
        astore.close()
        store.close()


def test_group_writer_batches_the_commits_of_runs_in_flight(catalog_of: CatalogOf,
                                                           sqlite_url: str) -> None:
    async def handler(ctx: Any) -> Any:
        await asyncio.sleep(0.005)
        return {}

    registry = Registry()
    for name in ("charge", "ship"):
        registry.add_action(f"{name}.do", handler)
        registry.add_compensation(f"{name}.undo", lambda ctx: None)

    async def scenario() -> tuple[int, int]:
        async with AsyncEngine(order_saga(catalog_of), registry, sqlite_url) as engine:
            ids = [(await engine.start("order", {})).id for _ in range(24)]
            worker = asyncio.create_task(engine.work(concurrency=8, poll_interval=0.05))
            deadline = time.monotonic() + BOUND
            while time.monotonic() < deadline:
                views = [await engine.get_run(i) for i in ids]
                if all(v.status == RunStatus.COMPLETED for v in views):
                    break
                await asyncio.sleep(0.02)
            engine.stop()
            await worker
            assert [v.status for v in views] == [RunStatus.COMPLETED] * len(ids)
            writer = engine.astore.writer
            assert writer is not None
            return writer.batches, writer.writes

    batches, writes = asyncio.run(scenario())
    assert writes >= 24 * 2  # at least a commit per step
    assert batches < writes  # commits of several runs shared transactions
