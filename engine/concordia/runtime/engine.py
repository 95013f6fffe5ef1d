"""The sync engine: for scripts, tests and threads; the same core as the async engine.

Each call carries one of the core's flows out in the calling thread (see
:mod:`concordia.runtime.effects`): ``advance`` loads a run, asks the planner what to do,
does it and journals the outcome, one pass per call. Sync handlers run in the calling
thread (a timeout cannot interrupt them there: an attempt that overruns it is failed when
it returns); the sync handlers of a parallel stage and async handlers run concurrently.
For a service on asyncio use :class:`~concordia.runtime.aengine.AsyncEngine`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import structlog

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.errors import ConcordiaError, StoreError, UnknownRunError, ValueRefusedError
from concordia.events.bus import Bus
from concordia.events.envelope import Envelope
from concordia.registry import Registry
from concordia.runtime.core import Core, Passes
from concordia.runtime.delivery import Delivery
from concordia.runtime.effects import Flow, drive
from concordia.runtime.invoke import HandlerPool, HandlerStopError, Invoker
from concordia.runtime.leases import LeaseKeeper
from concordia.runtime.views import RunView, is_run_id, read_list, read_view
from concordia.store.base import ConflictError, Store

T = TypeVar("T")
_log = structlog.get_logger("concordia.engine")


class Engine:
    """Runs sagas from a :class:`Catalog` with handlers from a :class:`Registry`.

    Settings (keyword arguments; see :class:`~concordia.runtime.config.EngineConfig`):
    ``source``, ``early_event_ttl``, ``step_timeout``, ``lease_ttl``, ``owner``,
    ``claim_new_runs``; ``handler_threads`` bounds the pool for parallel sync handlers.
    """

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 *, clock: Clock | None = None, bus: Bus | None = None,
                 check_bindings: bool = True, handler_threads: int = 16,
                 **settings: Any) -> None:
        self.core = Core(catalog, registry, store, clock=clock, bus=bus,
                         check_bindings=check_bindings, **settings)
        self._invoker = Invoker(HandlerPool(handler_threads))
        self._leases = LeaseKeeper(self._renew, self.core.config.lease_ttl)
        core = self.core

        def write_now(method: str, *args: Any) -> Any:
            return getattr(core.store, method)(*args)

        async def write_async(method: str, *args: Any) -> Any:
            return getattr(core.store, method)(*args)

        core.executor.bind_store(write_now, write_async)
        claim = self.core.config.claim_new_runs
        self._claim = True if claim is None else claim
        # Runs this engine created leased to itself and has not driven yet: their leases
        # are given up on close, so another engine need not wait for them to expire.
        self._claimed: dict[str, None] = {}

    # The collaborators, for callers and tests that reach for them.
    @property
    def catalog(self) -> Catalog:
        return self.core.catalog

    @property
    def registry(self) -> Registry:
        return self.core.registry

    @property
    def store(self) -> Store:
        return self.core.store

    @store.setter
    def store(self, store: Store) -> None:  # tests wrap the store to inject races
        self.core.store = store

    @property
    def clock(self) -> Clock:
        return self.core.clock

    @property
    def bus(self) -> Bus | None:
        return self.core.bus

    @property
    def owner(self) -> str:
        """This engine's name in the leases it takes."""
        return self.core.config.owner

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db", **kwargs: Any) -> Engine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly."""
        return cls(load_directory(path), registry, store, **kwargs)

    def _drive(self, flow: Flow[T]) -> T:
        return drive(flow, self.core.store, self._invoker, self._send)

    def _send(self, envelope: dict[str, Any]) -> None:
        if self.core.bus is not None:
            self.core.bus.publish(envelope)

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
        self._note_claimed([view.id])
        return view

    def _note_claimed(self, run_ids: list[str]) -> None:
        if not self._claim:
            return
        for run_id in run_ids:
            self._claimed[run_id] = None
        while len(self._claimed) > 100_000:
            del self._claimed[next(iter(self._claimed))]

    def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now.

        An error of the engine's own on this run is contained (the run fails its step or
        is parked as ``stuck``); a handler raising ``KeyboardInterrupt`` or ``SystemExit``
        has its attempt journaled as failed, then :class:`HandlerStopError` is raised.
        """
        self._pass(run_id)

    def _pass(self, run_id: str) -> bool:
        """One pass over a run; whether it wrote anything."""
        executor = self.core.executor
        self._claimed.pop(run_id, None)
        self._leases.hold(run_id)
        try:
            result = self._drive(executor.advance(run_id))
        except ConflictError:
            # Someone else (a delivery, another worker) moved the run; the next pass
            # reloads it. Handlers already called re-run with the same idempotency key.
            _log.debug("advance.conflict", run_id=run_id)
            return True
        except Exception as exc:
            if not is_run_fault(exc):
                raise
            self._drive(executor.contain(run_id, exc))
            return True
        finally:
            self._leases.release(run_id)
        if result.stop is not None:
            raise result.stop
        return result.wrote

    def run_until_idle(self, max_passes: int | None = None) -> Passes:
        """Advance every run that has work now, until none has; return the passes made.

        Runs whose leases a dead worker of this machine held (a crashed process this one
        replaces) are carried on at once. Runs that live workers elsewhere hold are left
        to them: how many is the result's ``pending_elsewhere`` (and logged).
        """
        passes = 0
        # A pass that writes nothing would be picked again at once: such runs (another
        # worker holds them) are left for the rest of this call.
        stalled: set[str] = set()
        store, clock, owner = self.core.store, self.core.clock, self.core.config.owner
        elsewhere: int | None = None
        while max_passes is None or passes < max_passes:
            due = [r for r in store.due_runs(clock.now(), 100, owner) if r not in stalled]
            if not due:
                if elsewhere is not None:
                    break
                # Nothing due: free the leases of dead workers, whose runs are due then.
                elsewhere = self._drive(self.core.reclaim())
                continue
            elsewhere = None
            for run_id in due:
                if not self._pass(run_id):
                    stalled.add(run_id)
                passes += 1
        if elsewhere:
            _log.info("engine.pending_elsewhere", runs=elsewhere)
        if self.core.bus is not None:
            self.relay_outbox()
        return Passes(passes, elsewhere or 0)

    def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait for timers due within ``max_wait`` seconds
        (sleeping on the engine's clock; a virtual clock just jumps) until none is left."""
        passes: int = self.run_until_idle()
        store, clock = self.core.store, self.core.clock
        while True:
            wake = store.next_wake_at()
            now = clock.now()
            if wake is None or wake - now > max_wait:
                return passes
            clock.sleep(wake - now)
            passes += self.run_until_idle()

    def work(self, stop: threading.Event | None = None, poll_interval: float = 0.5, *,
             concurrency: int = 1) -> None:
        """Worker loop: drive runs and fire timers until ``stop`` is set.

        With ``concurrency`` above 1 the runs are driven by an
        :class:`~concordia.runtime.aengine.AsyncEngine` over this engine's core, on an
        event loop of this thread, up to ``concurrency`` runs at once.
        """
        stop = stop or threading.Event()
        if concurrency > 1:
            import asyncio

            from concordia.runtime.aengine import AsyncEngine

            asyncio.run(AsyncEngine.over(self.core).work(
                concurrency=concurrency, poll_interval=poll_interval, stop_when=stop.is_set))
            return
        store, clock = self.core.store, self.core.clock
        while not stop.is_set():
            self.run_until_idle()
            wake = store.next_wake_at()
            delay = poll_interval if wake is None else min(poll_interval,
                                                           max(wake - clock.now(), 0.0))
            stop.wait(delay)

    def cancel(self, run_id: str, reason: str) -> RunView:
        """Stop a run in flight and compensate what it did; it ends ``cancelled``.

        A run another worker is working on stops when that worker's current step ends.
        """
        run = self._drive(self.core.executor.request_cancel(run_id, reason))
        if not run.leased_to_other(self.owner, self.core.clock.now()):
            self.advance(run_id)
        return self.get_run(run_id)

    def retry(self, run_id: str) -> RunView:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix)."""
        self._drive(self.core.executor.retry(run_id))
        self.advance(run_id)
        return self.get_run(run_id)

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
        self._note_claimed([rid for r in results for rid in r.started])
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
        return self._drive(read_view(self.core.order_of, run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunView]:
        return self._drive(read_list(status, saga, limit))

    def resolve_run_id(self, prefix: str) -> str:
        """The id of the one run whose id starts with ``prefix``."""
        if not is_run_id(prefix):
            raise UnknownRunError(prefix)
        found = self.core.store.find_run_ids(prefix, 2)
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownRunError(prefix)
        raise ConcordiaError(f"run id prefix {prefix!r} is ambiguous (it starts "
                             f"{found[0]}, {found[1]}, ...); give more of it")

    def close(self) -> None:
        self._leases.close()
        self._invoker.close()
        release_claims(self.core, list(self._claimed))
        self._claimed.clear()
        self.core.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_directory(path: str) -> Catalog:
    """The catalog of ``path/definitions`` and ``path/policies`` (or ``path`` itself)."""
    paths = [p for p in (os.path.join(path, "definitions"), os.path.join(path, "policies"))
             if os.path.isdir(p)] or [path]
    return Catalog.load_strict(paths)


def release_claims(core: Core, run_ids: list[str]) -> None:
    """Give up the leases of runs claimed at creation and never driven."""
    if core.store.readonly:
        return
    for i in range(0, len(run_ids), 500):
        try:
            core.store.release_leases(core.config.owner, run_ids[i:i + 500])
        except StoreError as exc:  # they expire on their own
            _log.warning("lease.release_failed", runs=len(run_ids), error=str(exc))
            return


def renew_leases(core: Core, run_ids: list[str]) -> list[str]:
    """Extend this worker's leases on the runs it holds; return those not lost.

    A run whose lease this worker does not hold is lost only if another worker holds a
    live lease on it. Otherwise its pass has not taken the lease yet (a renewal can come
    between the start of a pass and its first commit) or has just given it up.
    """
    owner = core.config.owner
    kept = core.store.renew_leases(owner, run_ids, core.clock.now() + core.config.lease_ttl)
    if len(kept) == len(run_ids):
        return kept
    now = core.clock.now()
    missing = set(run_ids).difference(kept)
    runs = [core.store.get_run(run_id) for run_id in missing]
    return kept + [r.id for r in runs if r is not None and not r.leased_to_other(owner, now)]


def is_run_fault(exc: Exception) -> bool:
    """Whether an error raised while advancing is the run's (contain it) or its
    surroundings' (the store is unreachable: the caller must see it)."""
    if isinstance(exc, ValueRefusedError):  # the run's own value, refused: contain it
        return True
    return not isinstance(exc, StoreError | HandlerStopError)

