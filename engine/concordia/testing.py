"""Testing helpers for users of Concordia (and for Concordia's own tests).

- :class:`Harness`: an engine on the in-memory store with a :class:`VirtualClock`, so
  retries, timers and await timeouts fire without sleeping.
- :class:`Faults`: inject a failure at any step (or compensation) and attempt, before or
  after the handler's side effect.
- :class:`CallLog` and :func:`assert_order`: what ran, in which order.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import RetryableError
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.views import RunView
from concordia.store.base import Store

Phase = Literal["action", "compensation"]


class InjectedFailure(RetryableError):
    """The error :class:`Faults` raises unless told to raise another."""


@dataclass
class _Fault:
    step: str
    phase: Phase
    attempts: frozenset[int] | None  # None: every attempt
    when: Literal["before", "after"]
    error: Callable[[], BaseException]


@dataclass
class CallLog:
    """Every handler call: (phase, step, attempt), in order."""

    calls: list[tuple[Phase, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, phase: Phase, step: str, attempt: int) -> None:
        with self._lock:
            self.calls.append((phase, step, attempt))

    def actions(self) -> list[str]:
        return [s for p, s, _ in self.calls if p == "action"]

    def compensations(self) -> list[str]:
        return [s for p, s, _ in self.calls if p == "compensation"]


class Faults:
    """A failure plan applied to a registry's handlers by step name and attempt.

    >>> faults = Faults().fail("charge", attempts=[1, 2]).fail("ship", when="after")
    >>> registry = faults.wrap(registry)
    """

    def __init__(self) -> None:
        self._faults: list[_Fault] = []
        self.log = CallLog()

    def fail(self, step: str, *, attempts: Iterable[int] | None = None,
             when: Literal["before", "after"] = "before",
             error: Callable[[], BaseException] | BaseException | None = None,
             compensation: bool = False) -> Faults:
        """Make ``step`` fail on the given attempts (all if None).

        ``when="after"`` runs the handler first (its side effect happens) and then fails,
        as a crash between the effect and the journal would.
        """
        make = _error_factory(error, step)
        self._faults.append(_Fault(step, "compensation" if compensation else "action",
                                   frozenset(attempts) if attempts is not None else None,
                                   when, make))
        return self

    def _match(self, phase: Phase, step: str, attempt: int) -> _Fault | None:
        for f in self._faults:
            if f.phase == phase and f.step == step and (f.attempts is None
                                                       or attempt in f.attempts):
                return f
        return None

    def wrap(self, registry: Registry) -> Registry:
        """A new registry whose handlers log calls and obey this plan."""
        out = Registry()
        for name in registry.action_names():
            out.add_action(name, self._wrap(registry.get_action(name).fn, "action"))
        for name in registry.compensation_names():
            out.add_compensation(name, self._wrap(registry.get_compensation(name).fn,
                                                  "compensation"))
        return out

    def _wrap(self, fn: Callable[[Any], Any], phase: Phase) -> Callable[[Any], Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(ctx: Any) -> Any:
                fault = self._before(phase, ctx)
                result = await fn(ctx)
                return self._after(fault, result)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(ctx: Any) -> Any:
            fault = self._before(phase, ctx)
            result = fn(ctx)
            return self._after(fault, result)
        return wrapper

    def _before(self, phase: Phase, ctx: Any) -> _Fault | None:
        self.log.add(phase, ctx.step, ctx.attempt)
        fault = self._match(phase, ctx.step, ctx.attempt)
        if fault is not None and fault.when == "before":
            raise fault.error()
        return fault

    @staticmethod
    def _after(fault: _Fault | None, result: Any) -> Any:
        if fault is not None:
            raise fault.error()
        return result


def _error_factory(error: Callable[[], BaseException] | BaseException | None,
                   step: str) -> Callable[[], BaseException]:
    if error is None:
        return lambda: InjectedFailure(f"injected failure at {step}")
    if isinstance(error, BaseException):
        return lambda: error
    return error


class Harness:
    """An engine on the in-memory store and a virtual clock, for tests.

    >>> h = Harness.from_paths(["definitions", "policies"], registry)
    >>> run = h.run("checkout", {"order_id": "o-1"})
    >>> assert run.status == "completed"
    """

    def __init__(self, catalog: Catalog, registry: Registry, *, faults: Faults | None = None,
                 store: Store | str = "memory://", clock: VirtualClock | None = None,
                 **engine_kwargs: Any) -> None:
        self.faults = faults or Faults()
        self.clock = clock or VirtualClock()
        self.engine = Engine(catalog, self.faults.wrap(registry), store, clock=self.clock,
                             **engine_kwargs)

    @classmethod
    def from_paths(cls, paths: Sequence[str], registry: Registry, **kwargs: Any) -> Harness:
        return cls(Catalog.load_strict(paths), registry, **kwargs)

    @property
    def log(self) -> CallLog:
        return self.faults.log

    def run(self, saga: str, input: Mapping[str, Any] | None = None, *,
            max_wait: float = 86400.0 * 365, **start_kwargs: Any) -> RunView:
        """Start ``saga`` and drive it (firing timers up to ``max_wait`` ahead); return it."""
        view = self.engine.start(saga, input, **start_kwargs)
        self.engine.drain(max_wait=max_wait)
        return self.engine.get_run(view.id)

    def advance(self, seconds: float) -> None:
        """Move the virtual clock and run whatever became due."""
        self.clock.advance(seconds)
        self.engine.run_until_idle()


def assert_order(view: RunView, *, actions: Sequence[str] | None = None,
                 compensations: Sequence[str] | None = None) -> None:
    """Assert the journaled order of succeeded actions and of compensations."""
    if actions is not None:
        got = view.executed_steps()
        assert got == list(actions), f"actions ran as {got}, expected {list(actions)}"
    if compensations is not None:
        got = view.compensated_steps()
        assert got == list(compensations), (
            f"compensations ran as {got}, expected {list(compensations)}")
