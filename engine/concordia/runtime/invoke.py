"""Calling handlers: sync inline or in a thread (with a timeout), async on the engine's loop.

What a timeout can stop: an async handler is cancelled at its next ``await``. A sync
handler runs in a worker thread that Python cannot interrupt: on timeout the engine stops
waiting and records the attempt as failed, but the thread runs on until the function
returns, so sync handlers with a timeout must be idempotent (use ``ctx.idempotency_key``).

Every call runs in its own copy of the caller's ``contextvars`` context with the handler
context's identity (run_id, saga, step, attempt, correlation_id, causation_id) bound for
structlog, whether it runs inline, in a worker thread or as a task, so module-level loggers
inside a handler carry them too, also for the concurrent steps of one stage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from concordia.registry import Binding

LOG_FIELDS = ("run_id", "saga", "step", "attempt", "correlation_id", "causation_id")


class StepTimeoutError(TimeoutError):
    """An attempt ran longer than its ``timeout``."""


class StepAbandonedError(RuntimeError):
    """Raised in a handler still running after the engine gave up on its attempt."""


@dataclass(slots=True)
class Outcome:
    ok: bool
    value: Any = None
    error: BaseException | None = None


class Invoker:
    """Runs handler calls; owns one event loop and one thread pool for the engine."""

    def __init__(self, max_workers: int = 16) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                           thread_name_prefix="concordia")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def call(self, binding: Binding, ctx: Any, timeout: float | None) -> Outcome:
        context = _call_context(ctx)
        if binding.is_async:
            task = self.loop.create_task(_call_async(binding.fn, ctx, timeout), context=context)
            return self.loop.run_until_complete(task)
        if timeout is None:
            return context.run(_call_sync, binding.fn, ctx)
        future = self._pool.submit(context.run, _call_sync, binding.fn, ctx)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return Outcome(False, error=StepTimeoutError(
                f"attempt exceeded its timeout of {timeout:g}s"))

    def call_many(self, calls: Sequence[tuple[Binding, Any, float | None]]) -> list[Outcome]:
        """Run several calls concurrently (a stage of parallel steps)."""
        if len(calls) == 1:
            b, c, t = calls[0]
            return [self.call(b, c, t)]

        async def gather() -> list[Outcome]:
            loop = asyncio.get_running_loop()
            tasks: list[asyncio.Future[Outcome]] = []
            for binding, ctx, timeout in calls:
                context = _call_context(ctx)
                if binding.is_async:
                    tasks.append(loop.create_task(_call_async(binding.fn, ctx, timeout),
                                                  context=context))
                else:
                    fut = loop.run_in_executor(self._pool, context.run, _call_sync,
                                               binding.fn, ctx)
                    tasks.append(loop.create_task(_bounded(fut, timeout)))
            return list(await asyncio.gather(*tasks))

        return self.loop.run_until_complete(gather())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def _structlog_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """structlog's context variables for LOG_FIELDS, found once through its public API
    (the tokens ``bind_contextvars`` returns name their variables)."""
    tokens = contextvars.Context().run(structlog.contextvars.bind_contextvars,
                                       **dict.fromkeys(LOG_FIELDS))
    return tuple(tokens[name].var for name in LOG_FIELDS)


_LOG_VARS = tuple(zip(_structlog_vars(), LOG_FIELDS, strict=True))


def _bind(ctx: Any) -> None:
    # What bind_contextvars does, minus its per-call name formatting and lookups: this
    # runs for every handler call. Ellipsis is structlog's "unbound".
    for var, name in _LOG_VARS:
        var.set(getattr(ctx, name, Ellipsis))


def _call_context(ctx: Any) -> contextvars.Context:
    """A copy of the caller's context with the handler context's identity bound."""
    context = contextvars.copy_context()
    context.run(_bind, ctx)
    return context


def _call_sync(fn: Callable[[Any], Any], ctx: Any) -> Outcome:
    try:
        return Outcome(True, fn(ctx))
    except Exception as exc:  # a handler's failure is data for the engine, not a crash
        return Outcome(False, error=exc)


async def _call_async(fn: Callable[[Any], Any], ctx: Any, timeout: float | None) -> Outcome:
    try:
        if timeout is None:
            return Outcome(True, await fn(ctx))
        return Outcome(True, await asyncio.wait_for(fn(ctx), timeout))
    except TimeoutError:
        return Outcome(False, error=StepTimeoutError(
            f"attempt exceeded its timeout of {timeout:g}s"))
    except Exception as exc:
        return Outcome(False, error=exc)


async def _bounded(fut: asyncio.Future[Outcome], timeout: float | None) -> Outcome:
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        return Outcome(False, error=StepTimeoutError(
            f"attempt exceeded its timeout of {timeout:g}s"))
