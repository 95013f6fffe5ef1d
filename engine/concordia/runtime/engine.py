"""The sync engine: for scripts, tests and threads; the same core as the async engine.

Each call carries one of the core's flows out in the calling thread (see
:mod:`concordia.runtime.effects`): ``advance`` loads a run, asks the planner what to do,
does it and journals the outcome, one pass per call. Sync handlers run in the calling
thread (a timeout cannot interrupt them there: an attempt that overruns it is failed when
it returns); the sync handlers of a parallel stage and async handlers run concurrently.
For a service on asyncio use :class:`~concordia.runtime.aengine.AsyncEngine`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, Unpack

from concordia.definitions.catalog import Catalog
from concordia.events.bus import Bus
from concordia.events.envelope import Envelope
from concordia.registry import Registry
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.config import Options
from concordia.runtime.core import Claims, Core, Passes, load_directory, renew_leases
from concordia.runtime.delivery import Delivery
from concordia.runtime.effects import Flow, drive
from concordia.runtime.engine_face import EngineFace
from concordia.runtime.invoke import HandlerPool, Invocation, Invoker, Outcome
from concordia.runtime.leases import LeaseKeeper
from concordia.runtime.views import RunDetail, RunView, read_list
from concordia.store.base import Store

T = TypeVar("T")


class Engine(EngineFace):
    """Runs sagas from a :class:`Catalog` with handlers from a :class:`Registry`.

    Options (keyword arguments, typed: see :class:`~concordia.runtime.config.Options`):
    ``clock``, ``bus``, ``check_bindings``, ``handler_threads`` (the pool for parallel
    sync handlers), and the settings: ``config`` (an
    :class:`~concordia.runtime.config.EngineConfig`) and/or its fields one by one
    (``source``, ``early_event_ttl``, ``step_timeout``, ``lease_ttl``, ``owner``,
    ``claim_new_runs``).
    """

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 **options: Unpack[Options]) -> None:
        self.core = Core(catalog, registry, store, options)
        self._invoker = Invoker(HandlerPool(self.core.handler_threads))
        self._leases = LeaseKeeper(self._renew, self.core.config.lease_ttl)
        self._bind_store()
        claim = self.core.config.claim_new_runs
        self._claim = True if claim is None else claim
        self._claims = Claims(self.core)

    def _bind_store(self) -> None:
        """Checkpoints from handlers are written in the handler's thread."""
        core = self.core

        async def write_async(fn: Any) -> Any:
            return fn(core.store)

        core.executor.journaling.bind_store(lambda fn: fn(core.store), write_async)

    # The collaborators, for callers and tests that reach for them (the rest: EngineFace).
    @property
    def store(self) -> Store:
        return self.core.store

    @store.setter
    def store(self, store: Store) -> None:  # tests wrap the store to inject races
        self.core.store = store

    @property
    def bus(self) -> Bus | None:
        return self.core.bus

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db",
                       **options: Unpack[Options]) -> Engine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly."""
        return cls(load_directory(path), registry, store, **options)

    # -- the shell the core's flows run in (see concordia.runtime.effects.Shell) -------------

    def _drive(self, flow: Flow[T]) -> T:
        return drive(flow, self.core.store, self)

    def call_many(self, invocations: list[Invocation]) -> list[Outcome]:
        return self._invoker.call_many(invocations)

    def publish(self, envelope: dict[str, Any]) -> None:
        if self.core.bus is not None:
            self.core.bus.publish(envelope)

    def pass_over(self, run_id: str) -> bool:
        """One pass over a run (under a renewed lease); whether it wrote anything."""
        self._claims.driven(run_id)
        self._leases.hold(run_id)
        try:
            result = self._drive(self.core.one_pass(run_id, None))
        finally:
            self._leases.release(run_id)
        if result.stop is not None:
            raise result.stop
        return result.wrote

    def sleep(self, seconds: float) -> None:
        self.core.clock.sleep(seconds)

    def _renew(self, run_ids: list[str]) -> list[str]:
        return renew_leases(self.core, run_ids)

    # -- runs --------------------------------------------------------------------------------

    def start(self, saga: str, input: Mapping[str, Any] | None = None, *,
              correlation_id: str | None = None, causation_id: str | None = None,
              version: int | None = None, run_id: str | None = None) -> RunView:
        """Create a run (durably) and return it; a worker or ``run_until_idle`` drives it."""
        view = self._drive(self.core.start(saga, input, correlation_id=correlation_id,
                                           causation_id=causation_id, version=version,
                                           run_id=run_id, claim=self._claim))
        if self._claim:
            self._claims.note([view.id])
        return view

    def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now.

        An error of the engine's own on this run is contained (the run fails its step or
        is parked as ``stuck``); a handler raising ``KeyboardInterrupt`` or ``SystemExit``
        has its attempt journaled as failed, then :class:`HandlerStopError` is raised.
        """
        self.pass_over(run_id)

    def run_until_idle(self, max_passes: int | None = None) -> Passes:
        """Advance every run that has work now, until none has; return the passes made.

        Runs whose leases a dead worker of this machine held (a crashed process this one
        replaces) are carried on at once. Runs that live workers elsewhere hold are left
        to them: how many is the result's ``pending_elsewhere`` (and logged).
        """
        return self._drive(self.core.until_idle(max_passes))

    def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait for timers due within ``max_wait`` seconds
        (sleeping on the engine's clock; a virtual clock just jumps) until none is left."""
        return self._drive(self.core.drain(max_wait))

    def work(self, stop: threading.Event | None = None, poll_interval: float = 0.5, *,
             concurrency: int = 1) -> None:
        """Worker loop: drive runs and fire timers until ``stop`` is set.

        With ``concurrency`` above 1 the runs are driven by an
        :class:`~concordia.runtime.aengine.AsyncEngine` over this engine's core, on an
        event loop of this thread, up to ``concurrency`` runs at once; its threads and
        its writer are gone when this returns.
        """
        stop = stop or threading.Event()
        if concurrency > 1:
            asyncio.run(self._work_async(stop, poll_interval, concurrency))
            return
        store, clock = self.core.store, self.core.clock
        while not stop.is_set():
            self.run_until_idle()
            wake = store.next_wake_at()
            delay = poll_interval if wake is None else min(poll_interval,
                                                           max(wake - clock.now(), 0.0))
            stop.wait(delay)

    async def _work_async(self, stop: threading.Event, poll_interval: float,
                          concurrency: int) -> None:
        engine = AsyncEngine.over(self.core)
        try:
            await engine.work(concurrency=concurrency, poll_interval=poll_interval,
                              stop_when=stop.is_set)
        finally:
            await engine.detach()  # its own threads stop; the store stays this engine's
            self._bind_store()

    def cancel(self, run_id: str, reason: str) -> RunView:
        """Stop a run in flight and compensate what it did; it ends ``cancelled``.

        A run another worker is working on stops when that worker's current step ends.
        """
        return self._drive(self.core.cancel(run_id, reason, advance=True))

    def retry(self, run_id: str) -> RunView:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix)."""
        return self._drive(self.core.retry(run_id, advance=True))

    # -- events ------------------------------------------------------------------------------

    def deliver(self, event: Envelope | Mapping[str, Any]) -> Delivery:
        """Take one inbound event: start the sagas it triggers, resume the runs awaiting it.

        The same event (``source`` and ``id``) delivered twice has one effect. An event
        nothing awaits yet is kept for ``early_event_ttl`` seconds, so a callback faster
        than its saga is not lost. Everything a delivery writes (the inbox entry, the runs
        it starts, the resumptions, the buffered copy) is one atomic unit.
        """
        return self.deliver_many([event])[0]

    def deliver_many(self, events: Iterable[Envelope | Mapping[str, Any]], *,
                     batch_size: int = 256) -> list[Delivery]:
        """Deliver events in order, up to ``batch_size`` of them per store transaction."""
        results = self._drive(self.core.deliverer.deliver_many(list(events), batch_size,
                                                               claim=self._claim))
        if self._claim:
            self._claims.note([rid for r in results for rid in r.started])
        return results

    def relay_outbox(self, limit: int = 500) -> int:
        """Publish pending persistent events to the bus; return how many."""
        if self.core.bus is None:
            return 0
        return self._drive(self.core.relay_outbox(limit))

    def causation_chain(self, event_id: str) -> list[dict[str, Any]]:
        """The event and its causes, oldest first (the trigger → ... → this event)."""
        return self._drive(self.core.causation_chain(event_id))

    # -- reading -----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunView:
        return self._drive(self.core.view(run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunView]:
        return self._drive(read_list(status, saga, limit))

    def run_detail(self, run_id: str) -> RunDetail:
        """A run with the causation chain of each event it emitted or received, and of
        its own cause (see :class:`~concordia.runtime.views.RunDetail`)."""
        return self._drive(self.core.detail(run_id))

    def resolve_run_id(self, prefix: str) -> str:
        """The id of the one run whose id starts with ``prefix``."""
        return self._drive(self.core.resolve_run_id(prefix))

    def close(self) -> None:
        self._leases.close()
        self._invoker.close()
        self._claims.release()
        self.core.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
