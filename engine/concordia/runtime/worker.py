"""The async worker loop: many runs in flight, each one pass at a time, under leases.

The loop keeps up to ``concurrency`` passes running as tasks, never two for one run. It
fills free slots from the store's due runs (runs with work now, due timers, and runs
whose lease expired with their worker), wakes at once when its own engine starts or
resumes a run, and otherwise looks again at the next timer or every ``poll_interval``
seconds. A store that offers ``claim_due`` (PostgreSQL) hands each worker runs no other
worker holds, leased to it in the same statement; one that offers ``listen`` wakes the
loop when another process makes a run due (the loop still polls: a lost notification
costs latency, never a run). A store that cannot be reached for a while (a database
restart) is waited for: the loop logs it and looks again. The leases of workers of this
machine found dead are freed when the loop starts and every few seconds after (see
:mod:`concordia.runtime.liveness`), so their runs are carried on without waiting out the
lease TTL. Stopping (``engine.stop()``,
SIGTERM in ``concordia worker``, or a handler raising ``KeyboardInterrupt``/``SystemExit``)
lets each pass finish the step in hand, end and release its lease, and starts no new pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from typing import Protocol

import structlog

from concordia.errors import StoreError
from concordia.runtime import transitions
from concordia.runtime.core import Core
from concordia.runtime.invoke import AsyncInvoker, HandlerStopError, LoopWatchdog
from concordia.store.aio import AsyncStore
from concordia.store.base import Claiming, Listening


class Driven(Protocol):
    """What the loop needs of the engine it drives (an
    :class:`~concordia.runtime.aengine.AsyncEngine`)."""

    core: Core
    astore: AsyncStore
    invoker: AsyncInvoker
    wake: asyncio.Event
    working: bool
    exit_error: HandlerStopError | None

    @property
    def stopping(self) -> bool: ...
    @property
    def owner(self) -> str: ...
    def stop(self) -> None: ...
    async def pass_over(self, run_id: str, draining: Callable[[], bool] | None = None
                        ) -> bool: ...
    async def reclaim(self) -> int: ...
    async def relay_outbox(self, limit: int = 500) -> int: ...

_log = structlog.get_logger("concordia.worker")
# How often (at most) a worker looks for dead workers of its machine whose leases it can
# free at once: a restarted worker looks when it starts.
RECLAIM_EVERY = 5.0


class Worker:
    """One ``AsyncEngine.work`` call (see the module docstring)."""

    def __init__(self, engine: Driven, concurrency: int, poll_interval: float,
                 stop_when: Callable[[], bool] | None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.stop_when = stop_when or (lambda: False)
        self.in_flight: dict[str, asyncio.Task[bool]] = {}
        # Runs whose pass wrote nothing (another worker holds them): left alone until then.
        self.resting: dict[str, float] = {}
        store = engine.core.store
        self.claiming = store if isinstance(store, Claiming) else None
        self.next_reclaim = float("-inf")  # the first look is at once

    def _stopping(self) -> bool:
        return self.engine.stopping or self.stop_when()

    async def run(self) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        # A wake event of this loop: one an earlier work() waited on belongs to its loop
        # (another asyncio.run, say), and waiting on it here fails at once, every time.
        engine.wake = asyncio.Event()
        watchdog = LoopWatchdog(loop, engine.invoker)
        watchdog.start()
        store = engine.core.store
        unlisten = (store.listen(partial(_wake_from_thread, loop, engine.wake))
                    if isinstance(store, Listening) else None)
        engine.working = True
        try:
            while not self._stopping():
                engine.wake.clear()
                try:
                    await self._fill()
                    await self._wait()
                except StoreError as exc:  # unreachable for now: look again shortly
                    _log.warning("worker.store_unavailable", error=str(exc))
                    await self._sleep(self.poll_interval)
        finally:
            if unlisten is not None:
                unlisten()
            engine.working = False
            if self.in_flight:  # finish the steps in hand; each pass releases its lease
                await self._finish_in_hand()
            watchdog.stop()
            if engine.core.bus is not None and engine.exit_error is None:
                try:
                    await engine.relay_outbox()
                except Exception as exc:  # a bus outage must not hide why the loop ended
                    _log.warning("outbox.relay_failed", error=str(exc))

    async def _finish_in_hand(self) -> None:
        """Wait for the passes in flight, but not for ever: a handler that neither ends nor
        heeds its cancellation must not keep a stopping worker alive. Past the longest
        timeout any step has, the passes are cancelled; one that still will not end is left
        behind (its lease expires, another worker carries its run on)."""
        passes = list(self.in_flight.values())
        core = self.engine.core
        sagas = [c.saga for c in core.book.compiled.values()]
        grace = 1.0 + max([core.config.step_timeout,
                           *(s.defaults.timeout or 0.0 for s in sagas),
                           *(step.timeout or 0.0 for s in sagas for step in s.steps)])
        _, pending = await asyncio.wait(passes, timeout=grace)
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            _log.error("worker.pass_left_behind", task=task.get_name())

    async def _fill(self) -> None:
        free = self.concurrency - len(self.in_flight)
        if free <= 0:
            return
        core = self.engine.core
        now = core.clock.now()
        if now >= self.next_reclaim:  # dead workers of this machine: their runs are due
            self.next_reclaim = now + min(core.config.lease_ttl / 3, RECLAIM_EVERY)
            await self.engine.reclaim()
        self.resting = {r: t for r, t in self.resting.items() if t > now}
        owner = core.config.owner
        if self.claiming is not None:
            # Leased to this worker in the claiming statement: no other worker gets them.
            claim = transitions.claim(owner, now, free, now + core.config.lease_ttl,
                                      [*self.in_flight, *self.resting])
            claiming = self.claiming
            due = await self.engine.astore.write(lambda _: claiming.claim_due(claim))
        else:
            wanted = free + len(self.in_flight) + len(self.resting)
            due = await self.engine.astore.read(lambda s: s.due_runs(now, wanted, owner))
        for run_id in due:
            if len(self.in_flight) >= self.concurrency:
                break
            if run_id in self.in_flight or run_id in self.resting:
                continue
            task = asyncio.create_task(self._pass(run_id), name=f"concordia-run-{run_id}")
            self.in_flight[run_id] = task
            task.add_done_callback(partial(self._done, run_id))

    def _done(self, run_id: str, _task: asyncio.Task[bool]) -> None:
        self.in_flight.pop(run_id, None)
        self.engine.wake.set()

    async def _pass(self, run_id: str) -> bool:
        engine = self.engine
        try:
            wrote = await engine.pass_over(run_id, self._stopping)
        except HandlerStopError as exc:
            _log.error("worker.stopping", run_id=run_id, reason=str(exc))
            engine.exit_error = engine.exit_error or exc
            engine.stop()
            return True
        except Exception as exc:  # the store is unreachable: rest this run, keep going
            _log.error("worker.pass_failed", run_id=run_id, error=str(exc))
            wrote = False
        if not wrote:
            self.resting[run_id] = engine.core.clock.now() + self.poll_interval
            if self.claiming is not None:  # give the claim back, or the run waits for it
                change = transitions.release(engine.owner, [run_id])
                try:
                    await engine.astore.write(lambda s: s.leases(change))
                except StoreError as exc:
                    _log.warning("lease.release_failed", run_id=run_id, error=str(exc))
        return wrote

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the engine is woken meanwhile (a stop wakes it)."""
        waiter = asyncio.ensure_future(self.engine.wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _wait(self) -> None:
        """Until a pass ends, the engine is woken, the next timer, or the poll interval."""
        if self._stopping():
            return
        timeout = self.poll_interval
        if len(self.in_flight) < self.concurrency:
            core = self.engine.core
            wake_at = await self.engine.astore.read(lambda s: s.next_wake_at())
            if wake_at is not None:
                timeout = min(timeout, max(wake_at - core.clock.now(), 0.0))
            if self.resting:
                timeout = min(timeout, max(min(self.resting.values()) - core.clock.now(), 0))
        # Never spin: a timer that is due but not ours to take is looked at again shortly.
        await self._sleep(max(timeout, 0.005))


def _wake_from_thread(loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
    """Set ``wake`` on its loop from another thread (a store's listener); a loop that has
    closed meanwhile has nobody left to wake."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(wake.set)
