"""An :class:`AsyncEngine` behind the sync engine's methods, so one suite runs both.

Each call runs the async engine's coroutine to completion on an event loop the facade
owns (as python-statemachine's test fixture drives its async engine): the engine's own
machinery (the store's I/O off the loop, async handlers as tasks, sync handlers in the
pool) is exactly what a service gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from concordia.clock import Clock
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.delivery import Delivery
from concordia.runtime.views import RunView
from concordia.store.base import Store

T = TypeVar("T")


class BlockingEngine:
    """The sync :class:`~concordia.runtime.engine.Engine` API over an async engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = AsyncEngine(*args, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def core(self) -> Any:
        return self.engine.core

    @property
    def store(self) -> Store:
        return self.engine.core.store

    @store.setter
    def store(self, store: Store) -> None:  # tests wrap the store to inject races
        self.engine.core.store = store
        self.engine.astore.store = store

    @property
    def clock(self) -> Clock:
        return self.engine.core.clock

    @property
    def owner(self) -> str:
        return self.engine.owner

    def start(self, saga: str, input: Mapping[str, Any] | None = None,
              **kwargs: Any) -> RunView:
        return self._run(self.engine.start(saga, input, **kwargs))

    def advance(self, run_id: str) -> None:
        self._run(self.engine.advance(run_id))

    def run_until_idle(self, max_passes: int | None = None) -> int:
        return self._run(self.engine.run_until_idle(max_passes))

    def drain(self, max_wait: float = 60.0) -> int:
        return self._run(self.engine.drain(max_wait))

    def cancel(self, run_id: str, reason: str) -> RunView:
        return self._run(self.engine.cancel(run_id, reason))

    def retry(self, run_id: str) -> RunView:
        return self._run(self.engine.retry(run_id))

    def resolve_run_id(self, prefix: str) -> str:
        return self._run(self.engine.resolve_run_id(prefix))

    def deliver(self, event: Any) -> Delivery:
        return self._run(self.engine.deliver(event))

    def deliver_many(self, events: Iterable[Any], **kwargs: Any) -> list[Delivery]:
        return self._run(self.engine.deliver_many(events, **kwargs))

    def relay_outbox(self, limit: int = 500) -> int:
        return self._run(self.engine.relay_outbox(limit))

    def causation_chain(self, event_id: str) -> list[dict[str, Any]]:
        return self._run(self.engine.causation_chain(event_id))

    def get_run(self, run_id: str) -> RunView:
        return self._run(self.engine.get_run(run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunView]:
        return self._run(self.engine.list_runs(status, saga, limit))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self._run(self.engine.aclose())
        self.loop.close()

    def __enter__(self) -> BlockingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
