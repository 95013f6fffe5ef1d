"""What both engines are made of: the collaborators, built once and passed in.

:class:`Core` holds the catalog, the registry, the store, the clock, the bus, the
settings, the :class:`~concordia.runtime.book.SagaBook`, the
:class:`~concordia.runtime.executor.Executor` and the
:class:`~concordia.runtime.delivery.Deliverer`. The sync
:class:`~concordia.runtime.engine.Engine` and the
:class:`~concordia.runtime.aengine.AsyncEngine` are two thin drivers over one core: they
differ only in how they carry its flows out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from concordia.clock import Clock, SystemClock
from concordia.definitions.catalog import Catalog
from concordia.events.bus import Bus
from concordia.registry import Registry
from concordia.runtime.book import SagaBook
from concordia.runtime.config import EngineConfig
from concordia.runtime.delivery import Deliverer
from concordia.runtime.effects import Flow, Read, Send, Write
from concordia.runtime.executor import Executor
from concordia.runtime.views import RunView, created_view
from concordia.store import open_store
from concordia.store.base import Store
from concordia.store.records import RunRecord

_log = structlog.get_logger("concordia.engine")


class Core:
    """The engine's collaborators (see the module docstring)."""

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str,
                 *, clock: Clock | None = None, bus: Bus | None = None,
                 check_bindings: bool = True, **settings: Any) -> None:
        self.catalog = catalog
        self.registry = registry
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.clock: Clock = clock or SystemClock()
        self.bus = bus
        try:
            self.config = EngineConfig(**settings)
            self.book = SagaBook(catalog, self.store)
            if check_bindings:
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
        commit = self.executor.new_run(definition, dict(input or {}), correlation_id,
                                       causation_id, run_id=run_id, claim=claim)
        yield Write("create_run", commit)
        view = created_view(self.order_of(commit.run), commit)
        if claim:  # this engine drives it next: it knows the run as written
            self.executor.remember(commit.run, {s.name: s for s in commit.steps})
        return view

    def relay_outbox(self, limit: int) -> Flow[int]:
        """Publish pending persistent events, in order; stop at the first refusal."""
        sent = 0
        while True:
            batch = yield Read("outbox_pending", limit)
            if not batch:
                return sent
            done: list[int] = []
            failed = False
            for seq, envelope in batch:
                try:
                    yield Send(envelope)
                except Exception as exc:
                    _log.warning("outbox.publish_failed", event_id=envelope["id"],
                                 error=str(exc))
                    failed = True
                    break
                done.append(seq)
            if done:
                yield Write("mark_published", done, self.clock.now())
            sent += len(done)
            if failed:
                return sent

    def causation_chain(self, event_id: str) -> Flow[list[dict[str, Any]]]:
        """The event and its causes, oldest first (the trigger → ... → this event)."""
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = event_id
        while current and current not in seen:
            seen.add(current)
            envelope = yield Read("get_event", current)
            if envelope is None:
                break
            chain.append(envelope)
            current = envelope.get("causationid")
        chain.reverse()
        return chain
