"""The async engine: the same core as the sync engine, driven on a running event loop.

For services built on asyncio (FastAPI, Starlette, aiohttp). Every method is a coroutine
that never blocks the loop: the store's I/O runs off it (SQLite writes grouped across
runs in flight, see :mod:`concordia.store.aio`), async handlers run on it as tasks, and
sync handlers run in a bounded thread pool. ``work(concurrency=N)`` advances up to N runs
at once, never one run twice at once, with a lease on each (see
:mod:`concordia.runtime.worker`). Build it inside a running loop with ``await
AsyncEngine.open(...)``, which opens the store (and records the definitions in it) off
the loop.

    engine = await AsyncEngine.open_directory(".", registry, store="sqlite:///runs.db")

    @asynccontextmanager
    async def lifespan(app):
        async with engine:
            worker = asyncio.create_task(engine.work(concurrency=8))
            yield
            engine.stop()          # finish the steps in hand, release leases
            await worker
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, Unpack

from concordia.clock import SystemClock
from concordia.definitions.catalog import Catalog
from concordia.events.bus import AsyncBus
from concordia.events.envelope import Envelope
from concordia.registry import Registry
from concordia.runtime.config import Options
from concordia.runtime.core import Claims, Core, Passes, load_directory, renew_leases
from concordia.runtime.delivery import Delivery
from concordia.runtime.effects import Flow, adrive
from concordia.runtime.engine_face import EngineFace
from concordia.runtime.invoke import (
    AsyncInvoker,
    HandlerPool,
    HandlerStopError,
    Invocation,
    Outcome,
)
from concordia.runtime.leases import LeaseKeeper
from concordia.runtime.views import RunDetail, RunView, make_view, read_list
from concordia.runtime.worker import Worker
from concordia.store.aio import AsyncStore
from concordia.store.base import RunQueries, Store

T = TypeVar("T")


class AsyncEngine(EngineFace):
    """Runs sagas on an event loop (see the module docstring).

    Takes the same arguments as :class:`~concordia.runtime.engine.Engine`. Runs it
    creates are leased to it (``claim_new_runs``) only while ``work()`` runs in it, so an
    engine that only starts runs (an HTTP API beside separate workers) leaves them free
    for any worker at once.
    """

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 **options: Unpack[Options]) -> None:
        self._attach(Core(catalog, registry, store, options))

    @classmethod
    async def open(cls, catalog: Catalog, registry: Registry,
                   store: Store | str = "memory://", **options: Unpack[Options]
                   ) -> AsyncEngine:
        """The engine, built off the event loop: opening the store and recording the
        definitions in it are I/O."""
        return cls.over(await asyncio.to_thread(Core, catalog, registry, store, options))

    @classmethod
    async def open_directory(cls, path: str, registry: Registry,
                             store: Store | str = "sqlite:///concordia.db",
                             **options: Unpack[Options]) -> AsyncEngine:
        """:meth:`open` over ``path/definitions`` and ``path/policies`` (or ``path``)."""
        catalog = await asyncio.to_thread(load_directory, path)
        return await cls.open(catalog, registry, store, **options)

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db",
                       **options: Unpack[Options]) -> AsyncEngine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly;
        built in the calling thread (inside a running loop, prefer
        :meth:`open_directory`)."""
        return cls(load_directory(path), registry, store, **options)

    @classmethod
    def over(cls, core: Core) -> AsyncEngine:
        """An async engine over an existing core (a sync engine's, for its
        ``work(concurrency=N)``): its own writer, threads and leases; :meth:`detach`
        stops them and leaves the core's store open."""
        engine = object.__new__(cls)
        engine._attach(core)
        return engine

    def _attach(self, core: Core) -> None:
        self.core = core
        self.astore = AsyncStore(core.store)
        self.invoker = AsyncInvoker(HandlerPool(core.handler_threads))
        self.leases = LeaseKeeper(self._renew, core.config.lease_ttl, self._lease_lost)
        self.working = False
        self.wake = asyncio.Event()
        self._stopping = False
        self.exit_error: HandlerStopError | None = None
        self._claims = Claims(core)
        astore = self.astore
        core.executor.journaling.bind_store(astore.write_blocking, astore.write)

    # -- the shell the core's flows run in (see concordia.runtime.effects.AsyncShell) --------

    async def _drive(self, flow: Flow[T]) -> T:
        return await adrive(flow, self.astore, self)

    async def call_many(self, invocations: list[Invocation]) -> list[Outcome]:
        return await self.invoker.call_many(invocations)

    async def publish(self, envelope: dict[str, Any]) -> None:
        bus = self.core.bus
        if isinstance(bus, AsyncBus):
            await bus.publish_async(envelope)
        elif bus is not None:
            bus.publish(envelope)

    async def pass_over(self, run_id: str, draining: Callable[[], bool] | None = None
                        ) -> bool:
        """One pass over a run; whether it wrote anything. Raises the
        :class:`HandlerStopError` of a handler that asked the worker to stop."""
        self._claims.driven(run_id)
        self.leases.hold(run_id)
        try:
            result = await self._drive(self.core.one_pass(run_id, draining))
        finally:
            self.leases.release(run_id)
        if result.stop is not None:
            raise result.stop
        return result.wrote

    async def sleep(self, seconds: float) -> None:
        """Sleep on the engine's clock: a virtual clock jumps, the system clock waits."""
        clock = self.core.clock
        if isinstance(clock, SystemClock):
            await asyncio.sleep(max(seconds, 0.0))
        else:
            clock.sleep(seconds)

    def _renew(self, run_ids: list[str]) -> list[str]:
        return renew_leases(self.core, run_ids)

    def _lease_lost(self, run_id: str) -> None:
        # Another worker may carry the run on now: calls not yet started must not start.
        for invocation in list(self.invoker.in_flight):
            if invocation.ctx.run_id == run_id:
                invocation.abandoned = True

    def _claim(self) -> bool:
        claim = self.core.config.claim_new_runs
        return self.working if claim is None else claim

    async def release_claims(self) -> None:
        """Give up the leases of runs this engine created and never drove."""
        await asyncio.to_thread(self._claims.release)

    # -- runs --------------------------------------------------------------------------------

    async def start(self, saga: str, input: Mapping[str, Any] | None = None, *,
                    correlation_id: str | None = None, causation_id: str | None = None,
                    version: int | None = None, run_id: str | None = None) -> RunView:
        """Create a run (durably); a worker (``work``) or ``run_until_idle`` drives it."""
        claim = self._claim()
        view = await self._drive(self.core.start(
            saga, input, correlation_id=correlation_id, causation_id=causation_id,
            version=version, run_id=run_id, claim=claim))
        if claim:
            self._claims.note([view.id])
        self.wake.set()
        return view

    async def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now (see ``Engine.advance``)."""
        await self.pass_over(run_id)

    async def run_until_idle(self, max_passes: int | None = None) -> Passes:
        """Advance every run that has work now, one at a time, until none has (see
        ``Engine.run_until_idle``: dead workers' runs are carried on, live ones' left)."""
        return await self._drive(self.core.until_idle(max_passes))

    async def reclaim(self) -> int:
        """Free the leases of dead workers of this machine; how many runs live workers
        elsewhere hold (see :meth:`Core.reclaim`)."""
        return await self._drive(self.core.reclaim())

    async def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait (on the engine's clock) for timers due
        within ``max_wait`` seconds until none is left."""
        return await self._drive(self.core.drain(max_wait))

    async def work(self, concurrency: int = 1, poll_interval: float = 0.5, *,
                   stop_when: Callable[[], bool] | None = None) -> None:
        """Drive runs, up to ``concurrency`` at once, and fire timers until :meth:`stop`
        is called (or ``stop_when()`` turns true). Stopping finishes the steps in hand,
        releases the leases and returns; if a handler asked the worker to stop
        (``KeyboardInterrupt``/``SystemExit``), its :class:`HandlerStopError` is raised
        then."""
        try:
            await Worker(self, concurrency, poll_interval, stop_when).run()
        finally:
            self._stopping = False  # the stop is answered: a later work() runs again
            await self.release_claims()
        if self.exit_error is not None:
            error, self.exit_error = self.exit_error, None
            raise error

    def stop(self) -> None:
        """Ask ``work`` to stop: finish the steps in hand, release leases, return."""
        self._stopping = True
        self.wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def cancel(self, run_id: str, reason: str, *, advance: bool = True) -> RunView:
        """Stop a run in flight and compensate what it did; it ends ``cancelled``.

        ``advance=False`` only records the request and leaves the compensations to the
        workers (for a process that drives no runs)."""
        view = await self._drive(self.core.cancel(run_id, reason,
                                                  advance=advance and not self.working))
        self.wake.set()  # a worker of this engine carries it on
        return view

    async def retry(self, run_id: str, *, advance: bool = True) -> RunView:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix);
        ``advance=False`` as for :meth:`cancel`."""
        view = await self._drive(self.core.retry(run_id, advance=advance and not self.working))
        self.wake.set()
        return view

    # -- events ------------------------------------------------------------------------------

    async def deliver(self, event: Envelope | Mapping[str, Any]) -> Delivery:
        """Take one inbound event (see ``Engine.deliver``)."""
        return (await self.deliver_many([event]))[0]

    async def deliver_many(self, events: Iterable[Envelope | Mapping[str, Any]], *,
                           batch_size: int = 256) -> list[Delivery]:
        claim = self._claim()
        results = await self._drive(self.core.deliverer.deliver_many(
            list(events), batch_size, claim=claim))
        if claim:
            self._claims.note([rid for r in results for rid in r.started])
        if any(r.started or r.resumed for r in results):
            self.wake.set()
        return results

    async def relay_outbox(self, limit: int = 500) -> int:
        """Publish pending persistent events to the bus; return how many."""
        if self.core.bus is None:
            return 0
        return await self._drive(self.core.relay_outbox(limit))

    async def causation_chain(self, event_id: str) -> list[dict[str, Any]]:
        return await self._drive(self.core.causation_chain(event_id))

    # -- reading -----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunView:
        return await self._drive(self.core.view(run_id))

    async def list_runs(self, status: str | None = None, saga: str | None = None,
                        limit: int = 100) -> list[RunView]:
        return await self._drive(read_list(status, saga, limit))

    async def run_detail(self, run_id: str) -> RunDetail:
        """A run with the causation chain of each event it emitted or received, and of
        its own cause (see :class:`~concordia.runtime.views.RunDetail`)."""
        return await self._drive(self.core.detail(run_id))

    async def resolve_run_id(self, prefix: str) -> str:
        return await self._drive(self.core.resolve_run_id(prefix))

    # -- operators' reads (a store's RunQueries), for an API in front of the engine ----------

    def _queries(self) -> RunQueries:
        store = self.core.store
        if not isinstance(store, RunQueries):
            raise TypeError(f"store {store.url} answers no operators' queries (RunQueries)")
        return store

    async def page_runs(self, *, saga: str | None = None, status: str | None = None,
                        correlation_id: str | None = None, before: str | None = None,
                        limit: int = 50) -> list[RunView] | None:
        """Runs newest first under the filters given (without their steps and history),
        continuing after run ``before`` (None: no such run)."""
        queries = self._queries()
        runs = await self.astore.read(
            lambda _: queries.page_runs(saga, status, correlation_id, before, limit))
        return None if runs is None else [make_view((), r, [], [], [], []) for r in runs]

    async def run_counts(self) -> list[tuple[str, str, int]]:
        """(saga, status, how many runs) for every pair that has runs."""
        queries = self._queries()
        return await self.astore.read(lambda _: queries.run_counts())

    async def outbox_backlog(self) -> tuple[int, str | None]:
        """How many persistent events wait to be published, and the oldest one's time."""
        queries = self._queries()
        return await self.astore.read(lambda _: queries.outbox_backlog())

    async def next_wake_at(self) -> float | None:
        """When the next timer (or lease expiry) is due; reading it proves the store
        answers."""
        return await self.astore.read(lambda s: s.next_wake_at())

    async def detach(self) -> None:
        """Stop what this engine runs of its own (the lease keeper, the handler pool, the
        store's writer and readers), leaving the core's store open."""
        await self.release_claims()
        self.leases.close()
        self.invoker.close()
        await asyncio.to_thread(self.astore.close)

    async def aclose(self) -> None:
        await self.detach()
        self.core.store.close()

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
