"""A path the explorer found, run on the real engine with the user's handlers.

The :class:`~concordia.runtime.engine.Engine` runs with the user's registry (wrapped by
the caller, as :func:`concordia.testing.explore` wraps it in ``Faults`` built from the
path), on a memory store and the explorer's clock. The same :class:`World` as the
explorer plays the world's part from the path's choices (a :class:`Script`): the
awaited events (their data from the caller, default the least the schema accepts), the
children's ends, the cancels, the workers dying after a handler's effect. The data
judgements are the engine's own (conditions, lists, payloads, matches, on the run's real
data): a path whose conditions or list lengths the real data answers otherwise is one
the data cannot take, and is skipped (give fakes whose lists have the explorer's length,
``Bounds.items``); a policy decides as the path says.

What ran — the calls (from the wrapped registry's log), the end state, what is left in
place — is compared with the prediction; any difference is a :class:`Mismatch`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from concordia.definitions.models import ActionStep, AwaitStep, Policy
from concordia.explore import properties
from concordia.explore.failures import action_options, compensation_options
from concordia.explore.judge import (
    CONDITION_OPTIONS,
    POLICY_OPTIONS,
    condition_point,
    decided,
    item_options,
    items_point,
    policy_point,
)
from concordia.explore.model import Act, Leftover, Option, PathRecord
from concordia.explore.oracle import Chooser, Script
from concordia.explore.samples import sample
from concordia.explore.search import Explorer
from concordia.explore.world import OWNER, ROOT, CallAt, ExploreClock, WorkerDied, World
from concordia.policies import DecisionRecord
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.invoke import Invocation, Outcome
from concordia.runtime.judge import Evaluating
from concordia.runtime.planner import retry_policy
from concordia.runtime.views import RunView, read_view
from concordia.store.memory import MemoryStore
from concordia.store.records import RunRecord

# The data of an awaited event: (the await step's name, the run so far) -> the data.
EventData = Callable[[str, RunView], Any]
# A handler call as a log shows it: (phase, step, item, attempt).
Logged = tuple[str, str, int | None, int]


class PathUnreachable(BaseException):
    """The real data cannot take this path (a list shorter than the path's)."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """What ran otherwise than predicted on one path."""

    path: PathRecord
    what: str  # "calls" | "status" | "left in place"
    predicted: Any
    actual: Any

    def describe(self) -> str:
        faults = "; ".join(c.describe() for c in self.path.faults) or "no fault"
        return (f"path {self.path.number} ({faults}): {self.what} predicted "
                f"{self.predicted!r}, ran {self.actual!r}")


@dataclass
class Ran:
    """What one path did on the engine."""

    calls: list[Logged]
    status: str
    leftovers: list[Leftover]


@dataclass
class Checked:
    """Every path checked on the engine."""

    saga: str
    paths: int = 0
    skipped: list[PathRecord] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)

    def summary(self) -> str:
        skipped = (f", {len(self.skipped)} skipped (the data cannot take them)"
                   if self.skipped else "")
        if not self.mismatches:
            return (f"{self.saga}: {self.paths} paths ran on the engine as predicted"
                    f"{skipped}")
        lines = [f"{self.saga}: {len(self.mismatches)} difference(s) between prediction "
                 f"and engine over {self.paths} paths{skipped}:"]
        return "\n".join([*lines, *(f"  {m.describe()}" for m in self.mismatches)])


class SteeringJudge(Evaluating):
    """The engine's judge, following the path where it branches: a condition or a list
    the real data answers otherwise than the path is a path the data cannot take
    (:class:`PathUnreachable`); a policy's decision is the path's."""

    def __init__(self, chooser: Chooser, items: int) -> None:
        self.chooser = chooser
        self.items_k = items

    def condition(self, step: str, source: str, run: RunRecord,
                  results: Mapping[str, Any]) -> Any:
        holds = super().condition(step, source, run, results)
        if run.id != ROOT or not isinstance(holds, bool):
            return holds
        chosen = self.chooser.choose(condition_point(step), list(CONDITION_OPTIONS))
        if holds != (chosen.act == Act.TRUE):
            raise PathUnreachable
        return holds

    def items(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any:
        value = super().items(step, source, run, results)
        if run.id != ROOT or not isinstance(value, list):
            return value
        count = self.chooser.choose(items_point(step), item_options(self.items_k)).count
        if len(value) != count:
            raise PathUnreachable
        return value

    def policy(self, step: str, policy: Policy, inputs: Mapping[str, Any],
               now: datetime) -> DecisionRecord:
        option = self.chooser.choose(policy_point(step), list(POLICY_OPTIONS))
        return decided(policy, option, inputs, now)


class EngineWorld(World):
    """The world of a path on the real engine (see the module docstring)."""

    def __init__(self, engine: Engine, clock: ExploreClock, explorer: Explorer,
                 chooser: Chooser, run_input: dict[str, Any], events: EventData | None
                 ) -> None:
        super().__init__(engine.core, clock, explorer.saga, chooser, run_input,
                         lambda name, version: explorer.bench.child_worst(
                             name, version, explorer.bounds))
        self.engine = engine
        self.explorer = explorer
        self.events = events

    def call_many(self, invocations: list[Invocation]) -> list[Outcome]:
        forward = self._moving_forward()
        saga = self.explorer.saga
        picked: list[tuple[CallAt, Option, ActionStep]] = []
        for invocation in invocations:
            at = CallAt.of(invocation.ctx)
            step = saga.step(at.step)
            assert isinstance(step, ActionStep)
            policy = retry_policy(saga, step, compensation=at.phase == "compensation")
            if at.phase == "compensation":
                options = functools.partial(compensation_options, policy, at.attempt)
            else:
                options = functools.partial(action_options, self.explorer.kinds[at.step],
                                            policy, at.attempt, crash=True, cancel=forward)
            option = self.option_for(at, forward, options)
            if option.act == Act.CANCEL:
                self._cancel()
            self.record(at, option, policy)
            picked.append((at, option, step))
        outcomes = self.engine.call_many(invocations)  # the user's handlers, with Faults
        self.calls_took(invocations)
        if any(option.act == Act.CRASH for _, option, _ in picked):
            raise WorkerDied
        return outcomes

    def event_data(self, step: AwaitStep, schema: dict[str, Any]) -> Any:
        if self.events is None:
            return sample(schema)
        view = self.drive(read_view(self.core.order_of, ROOT))
        return self.events(step.name, view)


def run_on_engine(explorer: Explorer, path: PathRecord, registry: Registry,
                  log: Callable[[], list[Logged]], *, run_input: dict[str, Any],
                  events: EventData | None) -> Ran | None:
    """Run ``path`` on an engine with ``registry`` (already wrapped); None when the data
    cannot take it."""
    clock = ExploreClock()
    catalog = explorer.bench.catalog
    engine = Engine(catalog, registry, MemoryStore(), clock=clock, owner=OWNER)
    try:
        chooser = Script.of(path.choices)
        engine.core.executor.journaling.judge = SteeringJudge(chooser, explorer.bounds.items)
        world = EngineWorld(engine, clock, explorer, chooser, run_input, events)
        try:
            run = world.run()
        except PathUnreachable:
            return None
        status = str(world.ledger.ending or run.status)
        loaded = engine.store.load(ROOT)
        assert loaded is not None
        found = properties.leftovers(explorer.saga, loaded,
                                     tuple(world.ledger.effects.values()), status)
        return Ran(log(), status, found)
    finally:
        engine.close()


def predicted_calls(path: PathRecord) -> list[Logged]:
    return [(c.phase, c.step, c.index, c.attempt) for c in path.calls]


def compare(path: PathRecord, ran: Ran) -> list[Mismatch]:
    out: list[Mismatch] = []
    calls = predicted_calls(path)
    if not _same_calls(path, ran.calls):
        out.append(Mismatch(path, "calls", _show(calls), _show(ran.calls)))
    if path.status != ran.status:
        out.append(Mismatch(path, "status", path.status, ran.status))
    predicted = sorted(lo.describe() for lo in path.leftovers)
    actual = sorted(lo.describe() for lo in ran.leftovers)
    if predicted != actual:
        out.append(Mismatch(path, "left in place", predicted, actual))
    return out


def _same_calls(path: PathRecord, ran: Sequence[Logged]) -> bool:
    """The calls in order, those the engine makes together (a stage's, a fan-out's
    items) in any order among themselves: they run concurrently."""
    if len(ran) != len(path.calls):
        return False
    at = 0
    for _, batch in itertools.groupby(path.calls, key=lambda c: c.batch):
        made = [(c.phase, c.step, c.index, c.attempt) for c in batch]
        if sorted(made, key=repr) != sorted(ran[at:at + len(made)], key=repr):
            return False
        at += len(made)
    return True


def _show(calls: Sequence[Logged]) -> list[str]:
    out = []
    for phase, step, index, attempt in calls:
        name = step if index is None else f"{step}[{index}]"
        out.append(f"{'undo ' if phase == 'compensation' else ''}{name}#{attempt}")
    return out
