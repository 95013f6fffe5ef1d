"""The I/O a run's flow asks for, and the two drivers that carry it out (sync and async).

The executor writes each flow once, as a generator that yields effects and receives
their results (httpx drives its auth flows the same way): read the store, write to it,
call handlers, publish an event. A flow asks through the typed helpers — ``run = yield
from read(lambda s: s.get_run(run_id))`` — so mypy checks the store call and the value
the flow gets back. :func:`drive` carries a flow out in the calling thread (the sync
:class:`~concordia.runtime.engine.Engine`); :func:`adrive` carries the same flow out on an
event loop (the :class:`~concordia.runtime.aengine.AsyncEngine`), with the store's I/O off
the loop and async handlers on it. An exception raised by an effect is thrown into the
flow at the ``yield`` that asked for it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog

from concordia.runtime.invoke import (
    Invocation,
    Outcome,
    preserve_log_context,
    restore_log_context,
)
from concordia.store.base import Store
from concordia.store.changes import Commit

if TYPE_CHECKING:
    from concordia.store.aio import AsyncStore

T = TypeVar("T")
_log = structlog.get_logger("concordia.engine")


class Read(Generic[T]):
    """Read the store: ``fn(store)``; the flow receives what it returns."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Store], T]) -> None:
        self.fn = fn


class Write(Generic[T]):
    """Write to the store: ``fn(store)``, one atomic unit (it may raise ConflictError).
    ``commit`` names the commit it writes when that is all it does, so that a writer
    grouping the writes of many runs can write several plain commits at once."""

    __slots__ = ("commit", "fn")

    def __init__(self, fn: Callable[[Store], T], commit: Commit | None = None) -> None:
        self.fn = fn
        self.commit = commit


@dataclass(slots=True)
class Call:
    """Call handlers (concurrently when there are several); the flow receives outcomes."""

    invocations: list[Invocation]


@dataclass(slots=True)
class Send:
    """Publish one event on the bus (it raises if the bus refuses it)."""

    envelope: dict[str, Any]


@dataclass(slots=True)
class Pass:
    """One pass over a run, as the engine makes one (under its lease, its errors
    contained); the flow receives whether it wrote anything."""

    run_id: str


@dataclass(slots=True)
class Sleep:
    """Wait ``seconds`` on the engine's clock (a virtual clock just jumps)."""

    seconds: float


Effect = Read[Any] | Write[Any] | Call | Send | Pass | Sleep
Flow = Generator[Effect, Any, T]


# -- what flows ask for (typed: ``value = yield from read(...)``) ----------------------------


def read(fn: Callable[[Store], T]) -> Flow[T]:
    value: T = yield Read(fn)
    return value


def write(fn: Callable[[Store], T]) -> Flow[T]:
    value: T = yield Write(fn)
    return value


def commit(change: Commit) -> Flow[None]:
    """Write a run's transition (see :meth:`Store.commit`)."""
    yield committing(change)


def committing(change: Commit) -> Write[None]:
    """The effect that writes a run's transition, for the hot paths that yield it
    themselves (one generator frame fewer per step). A writer grouping the writes of many
    runs may write it with others' when it is plain (:attr:`Commit.plain`)."""
    return Write(lambda store: store.commit(change), change)


def call(invocations: list[Invocation]) -> Flow[list[Outcome]]:
    outcomes: list[Outcome] = yield Call(invocations)
    return outcomes


def outcomes_of(value: Any) -> list[Outcome]:
    """Type what a flow receives for a :class:`Call` it yielded itself."""
    outcomes: list[Outcome] = value
    return outcomes


def send(envelope: dict[str, Any]) -> Flow[None]:
    yield Send(envelope)


def pass_over(run_id: str) -> Flow[bool]:
    wrote: bool = yield Pass(run_id)
    return wrote


def sleep(seconds: float) -> Flow[None]:
    yield Sleep(seconds)


def publish_best_effort(envelopes: list[dict[str, Any]]) -> Flow[None]:
    """Publish transient events after the commit that emitted them: best effort by
    definition, so a refusal is logged, never raised."""
    for envelope in envelopes:
        try:
            yield from send(envelope)
        except Exception as exc:
            _log.warning("event.publish_failed", event_id=envelope["id"], error=str(exc))


# -- the drivers -----------------------------------------------------------------------------


class Shell(Protocol):
    """What the sync driver needs of the engine around it: handler calls, the bus,
    passes over runs, sleeping."""

    def call_many(self, invocations: list[Invocation]) -> list[Outcome]: ...
    def publish(self, envelope: dict[str, Any]) -> None: ...
    def pass_over(self, run_id: str) -> bool: ...
    def sleep(self, seconds: float) -> None: ...


class AsyncShell(Protocol):
    """:class:`Shell` for the async driver."""

    async def call_many(self, invocations: list[Invocation]) -> list[Outcome]: ...
    async def publish(self, envelope: dict[str, Any]) -> None: ...
    async def pass_over(self, run_id: str) -> bool: ...
    async def sleep(self, seconds: float) -> None: ...


def drive(flow: Flow[T], store: Store, shell: Shell) -> T:
    """Carry ``flow`` out in this thread."""
    # This loop runs for every effect of every run: kept flat (no helper calls), the two
    # commonest effects first, by exact type.
    send, throw = flow.send, flow.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = send(value) if error is None else throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value = error = None
        try:
            kind = type(effect)
            if kind is Write or kind is Read:
                value = effect.fn(store)  # type: ignore[union-attr]
            elif kind is Call:
                value = shell.call_many(effect.invocations)  # type: ignore[union-attr]
            else:
                value = _perform(effect, shell)
        except Exception as exc:
            error = exc


def _perform(effect: Effect, shell: Shell) -> Any:
    if isinstance(effect, Send):
        return shell.publish(effect.envelope)
    if isinstance(effect, Pass):
        return shell.pass_over(effect.run_id)
    assert isinstance(effect, Sleep)
    return shell.sleep(effect.seconds)


async def adrive(flow: Flow[T], store: AsyncStore, shell: AsyncShell) -> T:
    """Carry ``flow`` out on the running event loop."""
    # Async handlers are awaited in this task with their identity bound for structlog;
    # whoever awaits this flow gets its own values back at the end.
    tokens = preserve_log_context()
    # A store that does no I/O (in memory) is called right here: a coroutine per effect
    # would cost more than the call.
    direct = store.store if store.inline else None
    send, throw = flow.send, flow.throw
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                effect = send(value) if error is None else throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = error = None
            try:
                kind = type(effect)
                if direct is not None and (kind is Write or kind is Read):
                    value = effect.fn(direct)  # type: ignore[union-attr]
                else:
                    value = await _aperform(effect, store, shell)
            except Exception as exc:
                error = exc
    finally:
        restore_log_context(tokens)


async def _aperform(effect: Effect, store: AsyncStore, shell: AsyncShell) -> Any:
    if isinstance(effect, Read):
        return await store.read(effect.fn)
    if isinstance(effect, Write):
        return await store.write(effect.fn, effect.commit)
    if isinstance(effect, Call):
        return await shell.call_many(effect.invocations)
    if isinstance(effect, Send):
        return await shell.publish(effect.envelope)
    if isinstance(effect, Pass):
        return await shell.pass_over(effect.run_id)
    return await shell.sleep(effect.seconds)
