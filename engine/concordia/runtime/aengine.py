"""The async engine: the same core as the sync engine, driven on a running event loop.

For services built on asyncio (FastAPI, Starlette, aiohttp). Every method is a coroutine
that never blocks the loop: the store's I/O runs off it (SQLite writes grouped across
runs in flight, see :mod:`concordia.store.aio`), async handlers run on it as tasks, and
sync handlers run in a bounded thread pool. ``work(concurrency=N)`` advances up to N runs
at once, never one run twice at once, with a lease on each (see
:mod:`concordia.runtime.worker`).

    engine = AsyncEngine.from_directory(".", registry, store="sqlite:///runs.db")

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
from typing import Any, TypeVar

import structlog

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.errors import ConcordiaError, UnknownRunError
from concordia.events.bus import Bus
from concordia.events.envelope import Envelope
from concordia.registry import Registry
from concordia.runtime.core import Core, Passes
from concordia.runtime.delivery import Delivery
from concordia.runtime.effects import Flow, adrive
from concordia.runtime.engine import is_run_fault, load_directory, release_claims, renew_leases
from concordia.runtime.invoke import AsyncInvoker, HandlerPool, HandlerStopError
from concordia.runtime.leases import LeaseKeeper
from concordia.runtime.views import RunView, is_run_id, read_list, read_view
from concordia.store.aio import AsyncStore
from concordia.store.base import ConflictError, Store

T = TypeVar("T")
_log = structlog.get_logger("concordia.engine")


class AsyncEngine:
    """Runs sagas on an event loop (see the module docstring).

    Takes the same arguments as :class:`~concordia.runtime.engine.Engine`. Runs it
    creates are leased to it (``claim_new_runs``) only while ``work()`` runs in it, so an
    engine that only starts runs (an HTTP API beside separate workers) leaves them free
    for any worker at once.
    """

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 *, clock: Clock | None = None, bus: Bus | None = None,
                 check_bindings: bool = True, handler_threads: int = 16,
                 **settings: Any) -> None:
        self._setup(Core(catalog, registry, store, clock=clock, bus=bus,
                         check_bindings=check_bindings, **settings), handler_threads)

    @classmethod
    def over(cls, core: Core, handler_threads: int = 16) -> AsyncEngine:
        """An async engine over an existing core (a sync engine's, for instance)."""
        engine = cls.__new__(cls)
        engine._setup(core, handler_threads)
        return engine

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db",
                       **kwargs: Any) -> AsyncEngine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly."""
        return cls(load_directory(path), registry, store, **kwargs)

    def _setup(self, core: Core, handler_threads: int) -> None:
        self.core = core
        self.astore = AsyncStore(core.store)
        self.invoker = AsyncInvoker(HandlerPool(handler_threads))
        self.leases = LeaseKeeper(self._renew, core.config.lease_ttl, self._lease_lost)
        self.working = False
        self.wake = asyncio.Event()
        self._stopping = False
        self.exit_error: HandlerStopError | None = None
        # Runs created leased to this engine and not driven yet: their leases are given up
        # when work() returns and on close, so other workers need not wait for them.
        self._claimed: dict[str, None] = {}
        astore = self.astore
        core.executor.bind_store(astore.write_blocking, astore.write)

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def owner(self) -> str:
        return self.core.config.owner

    async def _drive(self, flow: Flow[T]) -> T:
        return await adrive(flow, self.astore, self.invoker, self._send)

    async def _send(self, envelope: dict[str, Any]) -> None:
        bus = self.core.bus
        if bus is None:
            return
        publish = getattr(bus, "publish_async", None)
        if publish is not None:
            await publish(envelope)
        else:
            bus.publish(envelope)

    def _renew(self, run_ids: list[str]) -> list[str]:
        return renew_leases(self.core, run_ids)

    def _lease_lost(self, run_id: str) -> None:
        # Another worker may carry the run on now: calls not yet started must not start.
        for call in list(self.invoker.in_flight):
            if call.ctx.run_id == run_id:
                call.abandoned = True

    def _claim(self) -> bool:
        claim = self.core.config.claim_new_runs
        return self.working if claim is None else claim

    def _note_claimed(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._claimed[run_id] = None
        while len(self._claimed) > 100_000:  # the oldest have long expired
            del self._claimed[next(iter(self._claimed))]

    async def _release_claims(self) -> None:
        run_ids = list(self._claimed)
        self._claimed.clear()
        if run_ids:
            await asyncio.to_thread(release_claims, self.core, run_ids)

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
            self._note_claimed([view.id])
        self.wake.set()
        return view

    async def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now (see ``Engine.advance``)."""
        await self.pass_over(run_id)

    async def pass_over(self, run_id: str, draining: Callable[[], bool] | None = None
                        ) -> bool:
        """One pass over a run; whether it wrote anything. Raises the
        :class:`HandlerStopError` of a handler that asked the worker to stop."""
        executor = self.core.executor
        self._claimed.pop(run_id, None)
        self.leases.hold(run_id)
        try:
            result = await self._drive(executor.advance(run_id, draining))
        except ConflictError:
            _log.debug("advance.conflict", run_id=run_id)
            return True
        except Exception as exc:
            if not is_run_fault(exc):
                raise
            await self._drive(executor.contain(run_id, exc))
            return True
        finally:
            self.leases.release(run_id)
        if result.stop is not None:
            raise result.stop
        return result.wrote

    async def run_until_idle(self, max_passes: int | None = None) -> Passes:
        """Advance every run that has work now, one at a time, until none has (see
        ``Engine.run_until_idle``: dead workers' runs are carried on, live ones' left)."""
        passes = 0
        stalled: set[str] = set()
        core = self.core
        elsewhere: int | None = None
        while max_passes is None or passes < max_passes:
            due = await self.astore.read("due_runs", core.clock.now(), 100,
                                         core.config.owner)
            due = [r for r in due if r not in stalled]
            if not due:
                if elsewhere is not None:
                    break
                elsewhere = await self.reclaim()
                continue
            elsewhere = None
            for run_id in due:
                if not await self.pass_over(run_id):
                    stalled.add(run_id)
                passes += 1
        if elsewhere:
            _log.info("engine.pending_elsewhere", runs=elsewhere)
        if core.bus is not None:
            await self.relay_outbox()
        return Passes(passes, elsewhere or 0)

    async def reclaim(self) -> int:
        """Free the leases of dead workers of this machine; how many runs live workers
        elsewhere hold (see :meth:`Core.reclaim`)."""
        return await self._drive(self.core.reclaim())

    async def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait (on the engine's clock) for timers due
        within ``max_wait`` seconds until none is left."""
        passes: int = await self.run_until_idle()
        clock = self.core.clock
        while True:
            wake = await self.astore.read("next_wake_at")
            now = clock.now()
            if wake is None or wake - now > max_wait:
                return passes
            await _sleep(clock, wake - now)
            passes += await self.run_until_idle()

    async def work(self, concurrency: int = 1, poll_interval: float = 0.5, *,
                   stop_when: Callable[[], bool] | None = None) -> None:
        """Drive runs, up to ``concurrency`` at once, and fire timers until :meth:`stop`
        is called (or ``stop_when()`` turns true). Stopping finishes the steps in hand,
        releases the leases and returns; if a handler asked the worker to stop
        (``KeyboardInterrupt``/``SystemExit``), its :class:`HandlerStopError` is raised
        then."""
        from concordia.runtime.worker import Worker

        try:
            await Worker(self, concurrency, poll_interval, stop_when).run()
        finally:
            self._stopping = False  # the stop is answered: a later work() runs again
            await self._release_claims()
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
        run = await self._drive(self.core.executor.request_cancel(run_id, reason))
        if advance and not run.leased_to_other(self.owner, self.core.clock.now()):
            await self._go_on(run_id)
        return await self.get_run(run_id)

    async def retry(self, run_id: str, *, advance: bool = True) -> RunView:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix);
        ``advance=False`` as for :meth:`cancel`."""
        await self._drive(self.core.executor.retry(run_id))
        if advance:
            await self._go_on(run_id)
        return await self.get_run(run_id)

    async def _go_on(self, run_id: str) -> None:
        """Have the run moved: by the worker loop when one runs, else here and now."""
        if self.working:
            self.wake.set()
        else:
            await self.advance(run_id)

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
            self._note_claimed([rid for r in results for rid in r.started])
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
        return await self._drive(read_view(self.core.order_of, run_id))

    async def list_runs(self, status: str | None = None, saga: str | None = None,
                        limit: int = 100) -> list[RunView]:
        return await self._drive(read_list(status, saga, limit))

    async def resolve_run_id(self, prefix: str) -> str:
        if not is_run_id(prefix):
            raise UnknownRunError(prefix)
        found = await self.astore.read("find_run_ids", prefix, 2)
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise UnknownRunError(prefix)
        raise ConcordiaError(f"run id prefix {prefix!r} is ambiguous; give more of it")

    async def aclose(self) -> None:
        await self._release_claims()
        self.leases.close()
        self.invoker.close()
        await asyncio.to_thread(self.astore.close)
        self.core.store.close()

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _sleep(clock: Clock, seconds: float) -> None:
    """Sleep on the engine's clock: a virtual clock jumps, the system clock waits."""
    from concordia.clock import SystemClock

    if isinstance(clock, SystemClock):
        await asyncio.sleep(max(seconds, 0.0))
    else:
        clock.sleep(seconds)
