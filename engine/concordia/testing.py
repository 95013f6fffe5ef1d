"""Testing helpers for users of Concordia (and for Concordia's own tests).

- :class:`Harness`: an engine on the in-memory store with a :class:`VirtualClock`, so
  retries, timers and await timeouts fire without sleeping.
- :class:`Faults`: inject a failure at any step (or compensation, or item of a fan-out)
  and attempt, before or after the handler's side effect.
- :class:`CallLog` and :func:`assert_order`: what ran, in which order.
- :func:`explore`: every failure path the explorer finds, run on the engine with your
  handlers and :class:`Faults` at the path's points, each checked against its prediction
  (the runs themselves: :mod:`concordia.explore.on_engine`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep
from concordia.errors import RetryableError
from concordia.explore.failures import compensation_error
from concordia.explore.model import Act, Bounds, PathRecord, PointKind
from concordia.explore.on_engine import Checked, EventData, compare, run_on_engine
from concordia.explore.search import Explorer, Workbench
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.planner import retry_policy
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
    item: int | None = None  # a fan-out's item (None: the step itself, or any item)


@dataclass
class CallLog:
    """Every handler call: (phase, step, attempt), in order; ``items`` beside it, the
    fan-out item of each call (None for a step's own)."""

    calls: list[tuple[Phase, str, int]] = field(default_factory=list)
    items: list[int | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, phase: Phase, step: str, attempt: int, item: int | None = None) -> None:
        with self._lock:
            self.calls.append((phase, step, attempt))
            self.items.append(item)

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
             compensation: bool = False, item: int | None = None) -> Faults:
        """Make ``step`` fail on the given attempts (all if None); with ``item``, only that
        item of a fan-out (its attempts counted on their own).

        ``when="after"`` runs the handler first (its side effect happens) and then fails,
        as a crash between the effect and the journal would.
        """
        make = _error_factory(error, step)
        self._faults.append(_Fault(step, "compensation" if compensation else "action",
                                   frozenset(attempts) if attempts is not None else None,
                                   when, make, item))
        return self

    def _match(self, phase: Phase, step: str, attempt: int,
               item: int | None = None) -> _Fault | None:
        for f in self._faults:
            if f.phase == phase and f.step == step and (f.attempts is None
                                                       or attempt in f.attempts) and (
                    f.item is None or f.item == item):
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
        item = getattr(ctx, "index", None)
        self.log.add(phase, ctx.step, ctx.attempt, item)
        fault = self._match(phase, ctx.step, ctx.attempt, item)
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



@dataclass
class PathSetup:
    """What one path runs with: a registry (over fakes of its own), the run's input, the
    data of each awaited event (from the await's name and the run so far), and what to
    call once the path has run (to close the fakes' files and connections)."""

    registry: Registry
    input: Mapping[str, Any] | None = None
    events: EventData | None = None
    close: Callable[[], None] | None = None


def explore(catalog: Catalog | Sequence[str], saga: str,
            registry: Registry | Callable[[], Registry | PathSetup], *,
            bounds: Bounds | None = None, version: int | None = None,
            input: Mapping[str, Any] | None = None, events: EventData | None = None,
            raise_on_mismatch: bool = True) -> Checked:
    """Every failure path of ``saga``, run on the engine with your handlers.

    The explorer (:mod:`concordia.explore`) finds every path within ``bounds``; each is
    run on an in-memory engine with ``registry`` wrapped in :class:`Faults` that fail the
    calls the path fails (before or after their effect, on the attempts it says), the
    world's part played from the path (awaited events, a child saga's end, a cancel, a
    worker dying after an effect). What ran — the calls in order, the end state, what is
    left in place — must be what the explorer predicted; if not, ``AssertionError`` lists
    every difference (or, with ``raise_on_mismatch=False``, the result holds them).

    ``registry`` may be a callable giving a fresh registry per path, or a
    :class:`PathSetup` when the run's input or the awaited events depend on the fakes
    behind it. ``input`` is the run's input (default: the least its schema accepts);
    ``events`` gives the data of an awaited event.

    >>> explore(["definitions", "policies"], "checkout", registry)  # doctest: +SKIP
    """
    loaded = catalog if isinstance(catalog, Catalog) else Catalog.load_strict(catalog)
    definition = loaded.saga(saga, version)
    explorer = Workbench(loaded).explorer(definition, bounds or Bounds())
    exploration = explorer.explore()
    checked = Checked(definition.name)
    for path in exploration.complete_paths:
        faults = faults_for(explorer, path)
        if faults is None:
            checked.skipped.append(path)
            continue
        setup = _setup(registry, input, events)
        run_input = dict(setup.input) if setup.input is not None else dict(explorer.run_input)
        try:
            ran = run_on_engine(explorer, path, faults.wrap(setup.registry),
                                functools.partial(_logged, faults), run_input=run_input,
                                events=setup.events)
        finally:
            if setup.close is not None:
                setup.close()
        if ran is None:
            checked.skipped.append(path)
            continue
        checked.paths += 1
        checked.mismatches += compare(path, ran)
    if raise_on_mismatch and checked.mismatches:
        raise AssertionError(checked.summary())
    return checked


def _setup(registry: Registry | Callable[[], Registry | PathSetup],
           input: Mapping[str, Any] | None, events: EventData | None) -> PathSetup:
    made = registry if isinstance(registry, Registry) else registry()
    if isinstance(made, PathSetup):
        return dataclasses.replace(made, input=made.input if made.input is not None else input,
                                   events=made.events or events)
    return PathSetup(made, input, events)


def _logged(faults: Faults) -> list[tuple[str, str, int | None, int]]:
    return [(phase, step, item, attempt) for (phase, step, attempt), item
            in zip(faults.log.calls, faults.log.items, strict=True)]


def faults_for(explorer: Explorer, path: PathRecord) -> Faults | None:
    """The failures of ``path`` as :class:`Faults` (None: a path Faults cannot say: an
    attempt made twice — a worker died in its call — that fails only the one time, since
    Faults fails an attempt by its number)."""
    saga = explorer.saga
    faults = Faults()
    made = collections.Counter(c.point.key for c in path.choices
                               if c.point.kind in (PointKind.ACTION, PointKind.COMPENSATION))
    for choice in path.choices:
        point, option = choice.point, choice.option
        if option.act != Act.FAIL:
            continue
        if made[point.key] > 1:
            return None
        step = saga.step(point.step)
        assert isinstance(step, ActionStep)
        compensation = point.kind == PointKind.COMPENSATION
        policy = retry_policy(saga, step, compensation=compensation)
        attempts = (range(point.attempt, policy.attempts + 1) if option.sticky
                    else [point.attempt])
        if compensation:
            error: Callable[[], BaseException] = compensation_error
        else:
            error = functools.partial(explorer.error, point.step, option.error)
        faults.fail(point.step, attempts=attempts, when="after" if option.after else "before",
                    error=error, compensation=compensation, item=point.index)
    return faults
