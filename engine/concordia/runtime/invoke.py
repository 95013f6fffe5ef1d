"""Calling handlers: timeouts, poison isolation, and where each kind of handler runs.

Two invokers share the call wrappers:

- :class:`Invoker` (the sync engine) calls a sync handler in the calling thread, unless
  its step (or saga) declares a ``timeout``: then, like the sync handlers of a parallel
  stage, it runs in the :class:`HandlerPool`, where the timeout can abandon it. Async
  handlers run on a private event loop (in a thread of its own when the caller's thread
  is running a loop already, as in a notebook).
- :class:`AsyncInvoker` (the async engine) runs async handlers as tasks on the host's
  running loop and sync handlers in the :class:`HandlerPool`, so the loop never blocks on
  them.

Whatever a handler raises fails that attempt, ``TimeoutError`` included; the engine
classifies it for retries. ``KeyboardInterrupt`` and ``SystemExit`` raised by a handler
fail the attempt too and ask the worker to stop (:attr:`Outcome.stop`).

Timeouts. Every call has one (the step's, the saga's default, or the engine's). An async
handler is cancelled at its next ``await``. A sync handler in the pool is abandoned: the
engine stops waiting and fails the attempt, but Python cannot stop the thread, so it runs
on until the function returns (sync handlers with side effects must use
``ctx.idempotency_key``); an abandoned call no longer counts against the pool's size, so
stuck handlers cannot starve healthy ones. A call still queued when the engine gives up
on it is never started. A sync handler called inline, or an async handler that blocks
its loop (``time.sleep``), cannot be interrupted: if it returns after its deadline the
attempt is failed as timed out all the same (its result is not used), and a watchdog
reports a blocked loop while it happens.

Every call runs in its own copy of the caller's ``contextvars`` context with the handler
context's identity (run_id, saga, step, attempt, correlation_id, causation_id) bound for
structlog, so module-level loggers inside a handler carry them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

import structlog

from concordia.errors import PermanentError
from concordia.registry import Binding

LOG_FIELDS = ("run_id", "saga", "step", "attempt", "correlation_id", "causation_id")
_log = structlog.get_logger("concordia.invoke")


class StepTimeoutError(TimeoutError):
    """An attempt ran longer than its timeout."""


class StepAbandonedError(RuntimeError):
    """Raised in a handler still running after the engine gave up on its attempt."""


class HandlerStopError(PermanentError):
    """A handler raised ``KeyboardInterrupt`` or ``SystemExit``: the attempt fails for good
    and the worker stops (as on SIGTERM), so a poison run cannot end a worker silently."""

    def __init__(self, raised: BaseException, run_id: str | None = None,
                 step: str | None = None) -> None:
        self.raised = raised
        self.run_id = run_id
        self.step = step
        detail = f": {raised}" if str(raised) else ""
        where = f" of step {step} in run {run_id}" if run_id else ""
        super().__init__(f"the handler{where} raised {type(raised).__name__}{detail}")


@dataclass(slots=True)
class Outcome:
    ok: bool
    value: Any = None
    error: BaseException | None = None
    stop: bool = False  # the worker should stop once this attempt is journaled


@dataclass(slots=True, eq=False)
class Invocation:
    """One handler call the engine waits for."""

    binding: Binding
    ctx: Any
    timeout: float
    # Whether the timeout was declared (by the step or its saga) rather than the engine's
    # default: the sync engine then runs a sync handler where the timeout can abandon it.
    declared: bool = False
    # Set when the engine gives up on the call (timeout, shutdown, lost lease): a call
    # still queued then is never started.
    abandoned: bool = False
    started: float | None = field(default=None)

    @property
    def label(self) -> str:
        ctx = self.ctx
        return f"run {ctx.run_id} step {ctx.step} attempt {ctx.attempt}"


def timeout_error(timeout: float, took: float | None = None) -> StepTimeoutError:
    if took is None:
        return StepTimeoutError(f"attempt exceeded its timeout of {timeout:g}s")
    return StepTimeoutError(f"attempt took {took:.3g}s, over its timeout of {timeout:g}s "
                            "(it could not be interrupted; its result is not used)")


# -- binding the call's identity for structlog -------------------------------------------------


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


def preserve_log_context() -> list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]]:
    """Tokens that give the call identity's variables back their current values (hand them
    to :func:`restore_log_context` once the calls that bind them are done)."""
    return [(var, var.set(var.get(Ellipsis))) for var, _ in _LOG_VARS]


def restore_log_context(tokens: list[tuple[contextvars.ContextVar[Any],
                                           contextvars.Token[Any]]]) -> None:
    for var, token in reversed(tokens):
        var.reset(token)


def call_context(ctx: Any) -> contextvars.Context:
    """A copy of the caller's context with the handler context's identity bound."""
    context = contextvars.copy_context()
    context.run(_bind, ctx)
    return context


# -- the call wrappers -------------------------------------------------------------------------


def _failed(exc: BaseException) -> Outcome:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return Outcome(False, error=HandlerStopError(exc), stop=True)
    return Outcome(False, error=exc)


def call_sync(fn: Callable[[Any], Any], ctx: Any) -> Outcome:
    """Call a sync handler; whatever it raises is data for the engine, not a crash."""
    try:
        return Outcome(True, fn(ctx))
    except BaseException as exc:  # see the module docstring
        return _failed(exc)


# Seconds an async handler cancelled at its timeout has to end before it is reported
# (and, from then on, run where it can be abandoned).
ABANDON_GRACE = 1.0
# Handlers seen ignoring their cancellation: from then on each call of them runs as a task
# of its own, which can be abandoned. Every other async handler is awaited in the calling
# task: a task per call would cost a third of the async engine's time per step.
_ISOLATED: set[str] = set()
# Abandoned handler tasks, kept referenced until they end (Python cannot stop them).
_ABANDONED: set[asyncio.Task[Any]] = set()


# Timeouts of a second or more are checked by one watch per event loop, every TICK
# seconds (so enforced within TICK of the deadline): registering a call is a dict entry,
# where a timer per call costs a heap entry and a handle for every async handler call.
# Shorter timeouts get a timer of their own, to the millisecond.
TICK = 0.05
_PRECISE = 1.0


class _Deadline:
    """One async call's deadline: cancels its task when the time is up, and reports a
    call that ignores the cancellation."""

    __slots__ = ("at", "expired", "handle", "invocation", "task")

    def __init__(self, at: float, invocation: Invocation) -> None:
        self.at = at
        self.invocation = invocation
        self.task = asyncio.current_task()
        self.expired = False
        self.handle: asyncio.TimerHandle | None = None

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is not None and not self.task.done() and not self.expired:
            self.expired = True
            self.task.cancel()
            self.handle = loop.call_later(ABANDON_GRACE, self._ignored)

    def _ignored(self) -> None:
        binding = self.invocation.binding
        _ISOLATED.add(binding.name)
        _log.error("handler.ignores_cancellation", handler=self.invocation.label,
                   timeout=self.invocation.timeout,
                   remedy=f"it is waited for this time; later calls of {binding.name} "
                          f"are abandoned {ABANDON_GRACE:g}s after their timeout")


class _Watch:
    """The deadlines of one event loop's async calls, checked every ``TICK`` seconds while
    there are any."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines: set[_Deadline] = set()
        self.ticking = False

    def add(self, deadline: _Deadline, now: float) -> None:
        if deadline.at - now < _PRECISE:
            deadline.handle = self.loop.call_at(deadline.at, deadline.expire, self.loop)
            return
        self.deadlines.add(deadline)
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(TICK, self._tick)

    def remove(self, deadline: _Deadline) -> None:
        self.deadlines.discard(deadline)
        if deadline.handle is not None:
            deadline.handle.cancel()

    def _tick(self) -> None:
        now = self.loop.time()
        for deadline in [d for d in self.deadlines if d.at <= now]:
            self.deadlines.discard(deadline)
            deadline.expire(self.loop)
        if self.deadlines:
            self.loop.call_later(TICK, self._tick)
        else:
            self.ticking = False


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = (
    weakref.WeakKeyDictionary())


def _watch(loop: asyncio.AbstractEventLoop) -> _Watch:
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = _Watch(loop)
    return watch


async def call_here(invocation: Invocation) -> Outcome:
    """An async handler awaited in the calling task, under its timeout."""
    fn, ctx, timeout = invocation.binding.fn, invocation.ctx, invocation.timeout
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = _Deadline(began + timeout, invocation)
    watch = _watch(loop)
    watch.add(deadline, began)
    try:
        value = await fn(ctx)
    except asyncio.CancelledError as exc:
        task = deadline.task
        if deadline.expired and task is not None and task.uncancel() == 0:
            return Outcome(False, error=timeout_error(timeout))
        if task is not None and task.cancelling():
            raise  # the engine itself is being cancelled (shutdown): not the handler's doing
        return Outcome(False, error=exc)  # the handler raised CancelledError itself
    except BaseException as exc:  # see the module docstring (TimeoutError included)
        return _failed(exc)
    finally:
        watch.remove(deadline)
    return _in_time(invocation, loop.time() - began, Outcome(True, value))


def _in_time(invocation: Invocation, took: float, outcome: Outcome) -> Outcome:
    if took > invocation.timeout:  # it blocked the loop past its deadline
        _log.warning("handler.overran_timeout", handler=invocation.label, took=round(took, 3),
                     timeout=invocation.timeout, blocking=True)
        return Outcome(False, error=timeout_error(invocation.timeout, took))
    return outcome


async def _run_async(fn: Callable[[Any], Any], ctx: Any) -> Outcome:
    try:
        return Outcome(True, await fn(ctx))
    except asyncio.CancelledError:
        raise  # ends the task cancelled: the caller tells whose doing it was
    except BaseException as exc:  # see the module docstring (TimeoutError included)
        return _failed(exc)


async def call_in_task(invocation: Invocation, context: contextvars.Context) -> Outcome:
    """An async handler as a task of its own, under its timeout: at the deadline the task
    is cancelled, and one that ignores its cancellation is abandoned ``ABANDON_GRACE``
    seconds later, like a sync call that outlives its timeout."""
    loop = asyncio.get_running_loop()
    timeout = invocation.timeout
    task = loop.create_task(_run_async(invocation.binding.fn, invocation.ctx),
                            context=context)
    began = loop.time()
    ended: asyncio.Future[None] = loop.create_future()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    def end(*_: Any) -> None:
        if not ended.done():
            ended.set_result(None)

    task.add_done_callback(end)
    deadline = loop.call_at(began + timeout, expire)
    give_up = loop.call_at(began + timeout + ABANDON_GRACE, end)
    try:
        await ended
    except asyncio.CancelledError:  # the engine itself is being cancelled (shutdown)
        task.cancel()
        raise
    finally:
        deadline.cancel()
        give_up.cancel()
    if not task.done():
        invocation.abandoned = True
        _ABANDONED.add(task)
        task.add_done_callback(_ABANDONED.discard)
        _log.warning("handler.abandoned", handler=invocation.label, timeout=timeout,
                     reason="it ignored its cancellation")
        return Outcome(False, error=timeout_error(timeout))
    if task.cancelled():
        if expired:
            return Outcome(False, error=timeout_error(timeout))
        return Outcome(False, error=asyncio.CancelledError())  # raised by the handler itself
    return _in_time(invocation, loop.time() - began, task.result())


def _bound_call(fn: Callable[[Any], Any], ctx: Any) -> Outcome:
    _bind(ctx)
    return call_sync(fn, ctx)


def call_inline(invocation: Invocation) -> Outcome:
    """A sync handler in the calling thread; an overrun is detected when it returns."""
    began = time.monotonic()
    outcome = contextvars.copy_context().run(_bound_call, invocation.binding.fn,
                                             invocation.ctx)
    took = time.monotonic() - began
    if took > invocation.timeout:
        _log.warning("handler.overran_timeout", handler=invocation.label,
                     took=round(took, 3), timeout=invocation.timeout)
        stop = outcome.stop
        return Outcome(False, error=timeout_error(invocation.timeout, took), stop=stop)
    return outcome


# -- the pool for sync handlers ----------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Job:
    invocation: Invocation
    on_start: Callable[[], None]
    on_done: Callable[[Outcome], None]
    context: contextvars.Context
    finished: bool = False
    # Set by ``abandon`` when it stops counting the running call against ``size``. A call
    # marked abandoned elsewhere (its run's lease was lost) still counts until it returns.
    released: bool = False
    worker: threading.Thread | None = None  # the thread running it, once started


class HandlerPool:
    """Threads for sync handlers.

    At most ``size`` calls the engine still waits for run at once; more wait in a queue.
    A call abandoned by its timeout keeps its thread (Python cannot stop it) but stops
    counting against ``size``, and that thread ends when the call returns. Threads idle
    for ``idle_timeout`` seconds end too.
    """

    def __init__(self, size: int = 16, idle_timeout: float = 30.0) -> None:
        if size < 1:
            raise ValueError("a handler pool needs at least one thread")
        self.size = size
        self.idle_timeout = idle_timeout
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0  # threads counted against ``size``: busy with a call, or idle
        self._idle = 0  # of those, waiting for a call and not yet promised one
        self._abandoned = 0  # threads running a call the engine gave up on
        self._closed = False
        self._threads: set[threading.Thread] = set()  # counted against ``size``

    @property
    def abandoned_threads(self) -> int:
        """Threads still running calls the engine gave up on."""
        return self._abandoned

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler pool is closed")
            self._queue.put(job)
            if self._idle > 0:
                self._idle -= 1  # an idle thread will take it
            elif self._live < self.size:
                self._spawn()

    def abandon(self, job: _Job) -> None:
        """The engine gave up on ``job``: never start it; if it runs, stop counting it."""
        with self._lock:
            job.invocation.abandoned = True
            if job.invocation.started is None or job.finished:
                return
            job.released = True
            if job.worker is not None:
                self._threads.discard(job.worker)
            self._live -= 1
            self._abandoned += 1
            if not self._queue.empty() and self._idle == 0 and self._live < self.size:
                self._spawn()

    def _spawn(self) -> None:
        self._live += 1
        thread = threading.Thread(target=self._work, name="concordia-handler", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _work(self) -> None:
        try:
            self._serve()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _serve(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.idle_timeout)
            except Empty:
                with self._lock:
                    if self._queue.empty():  # idle too long: this thread ends
                        self._idle -= 1
                        self._live -= 1
                        return
                continue
            if job is None:  # the pool is closing
                with self._lock:
                    self._live -= 1
                return
            with self._lock:
                skipped = job.invocation.abandoned
                if skipped:  # given up on while queued: never started
                    self._idle += 1
                else:
                    job.invocation.started = time.monotonic()
                    job.worker = threading.current_thread()
            if skipped:
                # Whoever may still wait for it (its run's lease was lost) learns it ended.
                job.on_done(Outcome(False, error=StepAbandonedError(
                    f"{job.invocation.label} was given up on before it started")))
                continue
            job.on_start()
            outcome = job.context.run(call_sync, job.invocation.binding.fn, job.invocation.ctx)
            with self._lock:
                job.finished = True
                released = job.released
                if released:
                    self._abandoned -= 1
                else:
                    self._idle += 1
            job.on_done(outcome)
            if released:
                return  # no longer counted against ``size``: end the thread

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads; wait (up to ``timeout``) for those not running a call the
        engine gave up on (such a call cannot be stopped: its thread ends with it)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))


# -- the sync engine's invoker -----------------------------------------------------------------


class Invoker:
    """Runs the sync engine's handler calls (see the module docstring)."""

    def __init__(self, pool: HandlerPool | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool = pool or HandlerPool()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def call_many(self, calls: Sequence[Invocation]) -> list[Outcome]:
        if len(calls) == 1 and not calls[0].binding.is_async and not calls[0].declared:
            return [call_inline(calls[0])]
        if _loop_running():
            # Called from a thread whose own loop is running (a notebook, an async test):
            # no other loop can run in it, so the private loop runs in a thread of its own.
            with ThreadPoolExecutor(1, thread_name_prefix="concordia-calls") as thread:
                return thread.submit(self.loop.run_until_complete,
                                     _gather(self.pool, calls)).result()
        return self.loop.run_until_complete(_gather(self.pool, calls))

    def close(self) -> None:
        self.pool.close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None


class AsyncInvoker:
    """Runs the async engine's handler calls on the running loop (see the module docstring)."""

    def __init__(self, pool: HandlerPool | None = None) -> None:
        self.pool = pool or HandlerPool()
        self.in_flight: set[Invocation] = set()

    async def call_many(self, calls: Sequence[Invocation]) -> list[Outcome]:
        in_flight = self.in_flight
        if len(calls) == 1:
            call = calls[0]
            in_flight.add(call)
            try:
                return [await _call_one(self.pool, call)]
            finally:
                in_flight.discard(call)
        in_flight.update(calls)
        try:
            return await _gather(self.pool, calls)
        finally:
            in_flight.difference_update(calls)

    def close(self) -> None:
        self.pool.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _gather(pool: HandlerPool, calls: Sequence[Invocation]) -> list[Outcome]:
    return list(await asyncio.gather(*(_call_one(pool, c) for c in calls)))


async def _call_one(pool: HandlerPool, invocation: Invocation) -> Outcome:
    if invocation.binding.is_async and invocation.binding.name not in _ISOLATED:
        # Bound in the calling task's own context: the driver of the flow restores the
        # variables when the flow ends (see ``preserve_log_context``).
        _bind(invocation.ctx)
        return await call_here(invocation)
    context = call_context(invocation.ctx)
    if invocation.binding.is_async:
        return await call_in_task(invocation, context)
    return await _in_pool(pool, invocation, context)


async def _in_pool(pool: HandlerPool, invocation: Invocation,
                   context: contextvars.Context) -> Outcome:
    """A sync call in the pool, its timeout counted from when it starts running."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    done: asyncio.Future[Outcome] = loop.create_future()

    def on_start() -> None:
        _tell(loop, started, None)

    def on_done(outcome: Outcome) -> None:
        _tell(loop, done, outcome)

    job = _Job(invocation, on_start, on_done, context)
    pool.submit(job)
    try:
        waiting: set[asyncio.Future[Any]] = {started, done}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if done.done():
            return done.result()
        return await asyncio.wait_for(asyncio.shield(done), invocation.timeout)
    except TimeoutError:
        pool.abandon(job)
        return Outcome(False, error=timeout_error(invocation.timeout))
    except BaseException:
        pool.abandon(job)  # the engine is going away: a queued call must not start later
        raise


def _tell(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    """Settle ``future`` on its loop, from a pool thread."""
    # RuntimeError: the loop is closed. The engine stopped waiting for this call (it was
    # abandoned, then the engine closed): nobody is left to tell.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


# -- a loop that a handler blocks --------------------------------------------------------------


class LoopWatchdog:
    """Reports, from a thread of its own, an event loop blocked for over ``threshold``
    seconds, naming the async handler calls in flight (one of them is the culprit)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, invoker: AsyncInvoker,
                 threshold: float = 1.0) -> None:
        self.loop = loop
        self.invoker = invoker
        self.threshold = threshold
        self.reports = 0
        self._tick = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="concordia-watchdog",
                                        daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def _beat(self) -> None:
        self._tick = time.monotonic()
        if not self._stop.is_set():
            self._handle = self.loop.call_later(self.threshold / 4, self._beat)

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(self.threshold / 4):
            lag = time.monotonic() - self._tick
            if lag > self.threshold and not reported:
                reported = True
                self.reports += 1
                suspects = [c.label for c in list(self.invoker.in_flight)
                            if c.binding.is_async]
                _log.warning("event_loop.blocked", blocked_for=round(lag, 3),
                             async_handlers_in_flight=suspects)
            elif lag <= self.threshold:
                reported = False

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
