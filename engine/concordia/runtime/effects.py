"""The I/O a run's flow asks for, and the two drivers that carry it out (sync and async).

The executor writes each flow once, as a generator that yields effects and receives
their results (httpx drives its auth flows the same way): read the store, write to it,
call handlers, publish an event. :func:`drive` carries a flow out in the calling thread
(the sync :class:`~concordia.runtime.engine.Engine`); :func:`adrive` carries the same
flow out on an event loop (the :class:`~concordia.runtime.aengine.AsyncEngine`), with the
store's I/O off the loop and async handlers on it. An exception raised by an effect is
thrown into the flow at the ``yield`` that asked for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from concordia.runtime.invoke import preserve_log_context, restore_log_context
from concordia.store.base import Store

if TYPE_CHECKING:
    from concordia.runtime.invoke import AsyncInvoker, Invocation, Invoker, Outcome
    from concordia.store.aio import AsyncStore

T = TypeVar("T")
_log = structlog.get_logger("concordia.engine")


class Read:
    """Read the store: its method ``method`` with ``args``; the flow receives the result."""

    __slots__ = ("args", "method")

    def __init__(self, method: str, *args: Any) -> None:
        self.method = method
        self.args = args


class Write:
    """Write to the store: its method ``method`` with ``args``, one atomic unit (it may
    raise ConflictError). Named, not a closure, so that a store with an async API of its
    own (a connection pool on the event loop) can carry it out too."""

    __slots__ = ("args", "method")

    def __init__(self, method: str, *args: Any) -> None:
        self.method = method
        self.args = args


@dataclass(slots=True)
class Call:
    """Call handlers (concurrently when there are several); the flow receives outcomes."""

    invocations: list[Invocation]


@dataclass(slots=True)
class Send:
    """Publish one event on the bus (it raises if the bus refuses it)."""

    envelope: dict[str, Any]


Effect = Read | Write | Call | Send
Flow = Generator[Effect, Any, T]


class Publisher(Protocol):
    def __call__(self, envelope: dict[str, Any]) -> None: ...


def drive(flow: Flow[T], store: Store, invoker: Invoker, publish: Publisher) -> T:
    """Carry ``flow`` out in this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value = error = None
        try:
            kind = type(effect)
            if kind is Write or kind is Read:
                value = getattr(store, effect.method)(*effect.args)  # type: ignore[union-attr]
            elif kind is Call:
                value = invoker.call_many(effect.invocations)  # type: ignore[union-attr]
            else:
                publish(effect.envelope)  # type: ignore[union-attr]
        except Exception as exc:
            error = exc


async def adrive(flow: Flow[T], store: AsyncStore, invoker: AsyncInvoker,
                 publish: Callable[[dict[str, Any]], Awaitable[None]]) -> T:
    """Carry ``flow`` out on the running event loop."""
    # A store that does no I/O (in memory) is called directly: a coroutine per effect
    # would cost more than the call.
    direct = store.store if store.inline else None
    # Async handlers are awaited in this task with their identity bound for structlog;
    # whoever awaits this flow gets its own values back at the end.
    tokens = preserve_log_context()
    try:
        return await _adrive(flow, store, invoker, publish, direct)
    finally:
        restore_log_context(tokens)


async def _adrive(flow: Flow[T], store: AsyncStore, invoker: AsyncInvoker,
                  publish: Callable[[dict[str, Any]], Awaitable[None]], direct: Any) -> T:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value = error = None
        try:
            kind = type(effect)
            if direct is not None and (kind is Write or kind is Read):
                value = getattr(direct, effect.method)(*effect.args)  # type: ignore[union-attr]
            elif kind is Write:
                value = await store.write(effect.method, *effect.args)  # type: ignore[union-attr]
            elif kind is Read:
                value = await store.read(effect.method, *effect.args)  # type: ignore[union-attr]
            elif kind is Call:
                value = await invoker.call_many(effect.invocations)  # type: ignore[union-attr]
            else:
                await publish(effect.envelope)  # type: ignore[union-attr]
        except Exception as exc:
            error = exc


def publish_best_effort(envelopes: list[dict[str, Any]]) -> Flow[None]:
    """Publish transient events after the commit that emitted them: best effort by
    definition, so a refusal is logged, never raised."""
    for envelope in envelopes:
        try:
            yield Send(envelope)
        except Exception as exc:
            _log.warning("event.publish_failed", event_id=envelope["id"], error=str(exc))


def outcomes(value: Any) -> list[Outcome]:
    """Type the value a flow receives for a :class:`Call`."""
    result: list[Outcome] = value
    return result
