"""What both engines are made of: the collaborators, built once, and the flows both run.

:class:`Core` holds the catalog, the registry, the store, the clock, the bus, the
settings, the :class:`~concordia.runtime.book.SagaBook`, the
:class:`~concordia.runtime.executor.Executor` and the
:class:`~concordia.runtime.delivery.Deliverer`, and writes every operation of the engines
once, as a flow: starting a run, running until idle, draining timers, cancelling,
retrying, resolving an id, relaying the outbox. The sync
:class:`~concordia.runtime.engine.Engine` and the
:class:`~concordia.runtime.aengine.AsyncEngine` are two thin shells over one core: they
differ only in how they carry its flows out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from concordia.clock import Clock, SystemClock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import Saga
from concordia.errors import ConcordiaError, StoreError, UnknownRunError, UnknownSagaError
from concordia.events.bus import Bus
from concordia.registry import Registry
from concordia.runtime import transitions
from concordia.runtime.book import SagaBook
from concordia.runtime.config import DEFAULT_HANDLER_THREADS, EngineConfig, Options
from concordia.runtime.delivery import Deliverer
from concordia.runtime.effects import Flow, pass_over, read, send, sleep, write
from concordia.runtime.executor import Executor
from concordia.runtime.liveness import is_dead
from concordia.runtime.run_pass import PassResult
from concordia.runtime.views import RunDetail, RunView, created_view, read_view, received_ids
from concordia.store import open_store
from concordia.store.base import Store
from concordia.store.records import Loaded, RunRecord
from concordia.values import is_id

_log = structlog.get_logger("concordia.engine")


class Passes(int):
    """How many passes ``run_until_idle`` made (it is that number), and
    ``pending_elsewhere``: how many runs it left because live workers elsewhere hold their
    leases (they carry them on; if they die, their leases expire and the runs are due)."""

    pending_elsewhere: int

    def __new__(cls, passes: int, pending_elsewhere: int = 0) -> Passes:
        made = super().__new__(cls, passes)
        made.pending_elsewhere = pending_elsewhere
        return made


class Core:
    """The engine's collaborators (see the module docstring)."""

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str,
                 options: Options) -> None:
        self.catalog = catalog
        self.registry = registry
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.clock: Clock = options.get("clock") or SystemClock()
        self.bus: Bus | None = options.get("bus")
        self.handler_threads = options.get("handler_threads", DEFAULT_HANDLER_THREADS)
        try:
            self.config = EngineConfig.of(options)
            self.book = SagaBook(catalog, self.store)
            if options.get("check_bindings", True):
                self.book.check_bindings(registry)
        except BaseException:
            # A store this core opened is closed when the core cannot be made (a saga
            # version edited in place, unbound handlers): it would leak otherwise.
            if isinstance(store, str):
                self.store.close()
            raise
        self.executor = Executor(self.book, catalog, registry, self.clock, self.config)
        self.deliverer = Deliverer(self.executor)

    def order_of(self, run: RunRecord) -> tuple[str, ...]:
        """The steps of the version ``run`` is pinned to, in definition order."""
        return tuple(self.book.of(run.saga, run.version).steps)

    def start(self, saga: str, input: Mapping[str, Any] | None, *,
              correlation_id: str | None, causation_id: str | None, version: int | None,
              run_id: str | None, claim: bool) -> Flow[RunView]:
        """Create a run durably; its view is exactly what the creating commit wrote."""
        definition = self.book.saga(saga, version)
        created = self.executor.creator.new_run(definition, dict(input or {}),
                                                correlation_id, causation_id, run_id=run_id,
                                                claim=claim)
        yield from write(lambda s: s.create(created))
        view = created_view(self.order_of(created.run), created)
        if claim:  # this engine drives it next: it knows the run as written
            self.executor.journaling.remember(
                Loaded(created.run, {s.name: s for s in created.steps}, {}))
        return view

    def one_pass(self, run_id: str, draining: Callable[[], bool] | None) -> Flow[PassResult]:
        """One pass over a run (see :meth:`Executor.advance`)."""
        return self.executor.advance(run_id, draining)

    def until_idle(self, max_passes: int | None) -> Flow[Passes]:
        """Pass over every run that has work now, until none has (see
        ``Engine.run_until_idle``): dead workers' runs are carried on, live ones' left."""
        passes = 0
        # A pass that writes nothing would be picked again at once: such runs (another
        # worker holds them) are left for the rest of this call.
        stalled: set[str] = set()
        owner = self.config.owner
        elsewhere: int | None = None
        while max_passes is None or passes < max_passes:
            now = self.clock.now()
            due = yield from read(lambda s: s.due_runs(now, 100, owner))  # noqa: B023
            due = [r for r in due if r not in stalled]
            if not due:
                if elsewhere is not None:
                    break
                # Nothing due: free the leases of dead workers, whose runs are due then.
                elsewhere = yield from self.reclaim()
                continue
            elsewhere = None
            for run_id in due:
                if not (yield from pass_over(run_id)):
                    stalled.add(run_id)
                passes += 1
        if elsewhere:
            _log.info("engine.pending_elsewhere", runs=elsewhere)
        if self.bus is not None:
            yield from self.relay_outbox(500)
        return Passes(passes, elsewhere or 0)

    def drain(self, max_wait: float) -> Flow[int]:
        """:meth:`until_idle`, then wait for timers due within ``max_wait`` seconds
        (on the engine's clock) until none is left."""
        passes: int = yield from self.until_idle(None)
        while True:
            wake = yield from read(lambda s: s.next_wake_at())
            now = self.clock.now()
            if wake is None or wake - now > max_wait:
                return passes
            yield from sleep(wake - now)
            passes += yield from self.until_idle(None)

    def reclaim(self) -> Flow[int]:
        """Free the leases of dead workers of this machine at once (see
        :mod:`concordia.runtime.liveness`); return how many runs other, live owners hold
        (they are left to them until their leases expire)."""
        now = self.clock.now()
        me = self.config.owner
        holders = yield from read(lambda s: s.lease_holders(now))
        elsewhere = 0
        for owner, runs in holders.items():
            if owner == me:
                continue
            if not is_dead(owner):
                elsewhere += runs
                continue
            change = transitions.release(owner, None)
            freed = yield from write(lambda s: s.leases(change))  # noqa: B023 (called at once)
            _log.warning("lease.owner_dead", owner=owner, runs=len(freed))
        return elsewhere

    def cancel(self, run_id: str, reason: str, *, advance: bool) -> Flow[RunView]:
        """Ask a run to cancel; with ``advance``, carry the cancellation out here unless
        another worker holds the run (it stops when its current step ends)."""
        run = yield from self.executor.request_cancel(run_id, reason)
        if advance and not run.leased_to_other(self.config.owner, self.clock.now()):
            yield from pass_over(run_id)
        return (yield from self.view(run_id))

    def retry(self, run_id: str, *, advance: bool) -> Flow[RunView]:
        """Resume a run halted in ``compensation_failed`` or ``stuck``; with ``advance``,
        carry it on here."""
        yield from self.executor.retry(run_id)
        if advance:
            yield from pass_over(run_id)
        return (yield from self.view(run_id))

    def view(self, run_id: str) -> Flow[RunView]:
        return (yield from read_view(self.order_of, run_id))

    def resolve_run_id(self, prefix: str) -> Flow[str]:
        """The id of the one run whose id starts with ``prefix``."""
        found = (yield from read(lambda s: s.find_run_ids(prefix, 2))) if is_id(prefix) else []
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownRunError(prefix)
        raise ConcordiaError(f"run id prefix {prefix!r} is ambiguous (it starts "
                             f"{found[0]}, {found[1]}, ...); give more of it")

    def relay_outbox(self, limit: int) -> Flow[int]:
        """Publish pending persistent events, in order; stop at the first refusal."""
        sent = 0
        while True:
            batch = yield from read(lambda s: s.outbox_pending(limit))
            if not batch:
                return sent
            done: list[int] = []
            failed = False
            for seq, envelope in batch:
                try:
                    yield from send(envelope)
                except Exception as exc:
                    _log.warning("outbox.publish_failed", event_id=envelope["id"],
                                 error=str(exc))
                    failed = True
                    break
                done.append(seq)
            if done:
                at = self.clock.now()
                yield from write(lambda s: s.mark_published(done, at))  # noqa: B023
            sent += len(done)
            if failed:
                return sent

    def causation_chain(self, event_id: str,
                        known: dict[str, dict[str, Any] | None] | None = None
                        ) -> Flow[list[dict[str, Any]]]:
        """The event and its causes, oldest first (the trigger → ... → this event).
        ``known`` holds the events read so far (chains share their causes)."""
        known = {} if known is None else known
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = event_id
        while current and current not in seen:
            seen.add(current)
            wanted = current
            if wanted not in known:
                known[wanted] = yield from read(lambda s: s.get_event(wanted))  # noqa: B023
            envelope = known[wanted]
            if envelope is None:
                break
            chain.append(envelope)
            current = envelope.get("causationid")
        chain.reverse()
        return chain

    def detail(self, run_id: str) -> Flow[RunDetail]:
        """A run and the causation chain of each event it emitted or received and of its
        own cause, in one flow (the chains' shared causes read once)."""
        view = yield from self.view(run_id)
        known: dict[str, dict[str, Any] | None] = {}
        chains: dict[str, list[dict[str, Any]]] = {}
        for event in view.events:
            chains[event["id"]] = yield from self.causation_chain(event["id"], known)
        received = []
        for event_id in received_ids(view):
            chain = yield from self.causation_chain(event_id, known)
            if chain:  # a chain ends with its event
                received.append(chain[-1])
                chains[event_id] = chain
        cause = view.causation_id
        if cause and cause not in chains:
            chains[cause] = yield from self.causation_chain(cause, known)
        return RunDetail(view, chains, received)

    def versions(self) -> dict[str, dict[int, Saga]]:
        """Every saga version the engine runs (the definitions', and those only runs in
        the store still use), by name and version."""
        out: dict[str, dict[int, Saga]] = {}
        for (name, version), compiled in sorted(self.book.compiled.items()):
            out.setdefault(name, {})[version] = compiled.saga
        return out

    def state_labels(self, saga: str, version: int) -> dict[str, str]:
        """The saga's state names as its author would say them (``reserve + notify``,
        ``undo charge``), by machine state; none for a version the engine cannot run."""
        try:
            return self.book.of(saga, version).labels
        except UnknownSagaError:
            return {}


# -- what both shells share ------------------------------------------------------------------


def load_directory(path: str) -> Catalog:
    """The catalog of ``path/definitions`` and ``path/policies`` (or ``path`` itself)."""
    paths = [p for p in (os.path.join(path, "definitions"), os.path.join(path, "policies"))
             if os.path.isdir(p)] or [path]
    return Catalog.load_strict(paths)


class Claims:
    """Runs an engine created leased to itself and has not driven yet: their leases are
    given up when it closes (or its worker stops), so other workers need not wait for
    them to expire."""

    LIMIT = 100_000  # the oldest have long expired

    def __init__(self, core: Core) -> None:
        self.core = core
        self._runs: dict[str, None] = {}

    def note(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._runs[run_id] = None
        while len(self._runs) > self.LIMIT:
            del self._runs[next(iter(self._runs))]

    def driven(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def release(self) -> None:
        """Give the leases up (in the calling thread: it writes to the store)."""
        run_ids, self._runs = list(self._runs), {}
        core = self.core
        if core.store.readonly:
            return
        for chunk in _chunks(run_ids, 500):
            change = transitions.release(core.config.owner, chunk)
            try:
                core.store.leases(change)
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
    store = core.store
    kept = store.leases(transitions.renew(owner, run_ids,
                                          core.clock.now() + core.config.lease_ttl))
    if len(kept) == len(run_ids):
        return kept
    now = core.clock.now()
    missing = set(run_ids).difference(kept)
    runs = [store.get_run(run_id) for run_id in missing]
    return kept + [r.id for r in runs if r is not None and not r.leased_to_other(owner, now)]


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
