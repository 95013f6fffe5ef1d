"""The ``Bus`` protocol events are published through (and ``AsyncBus``, a bus that can
also publish from an event loop without blocking it), and an in-memory bus for tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Bus(Protocol):
    def publish(self, envelope: dict[str, Any]) -> None:
        """Publish one CloudEvents envelope (structured JSON form); raise on failure."""
        ...


@runtime_checkable
class AsyncBus(Bus, Protocol):
    """A bus the async engine publishes through on its own loop."""

    async def publish_async(self, envelope: dict[str, Any]) -> None: ...


class InMemoryBus:
    """Keeps every published envelope and calls subscribers synchronously."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()

    def publish(self, envelope: dict[str, Any]) -> None:
        with self._lock:
            self.published.append(envelope)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(envelope)

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def types(self) -> list[str]:
        return [e["type"] for e in self.published]
