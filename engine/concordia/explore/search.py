"""Depth-first search over a saga's paths, each replayed from the start on a fresh memory
store (the choice sequences of stateless model checkers), with states met twice
explored once.

One :class:`Workbench` per definition tree holds the engine's core (built once: its
catalog, compiled sagas and executor), on which each path gets a fresh journal. An
:class:`Explorer` per saga replays prefixes of choices with the :class:`Oracle` until
every option of every point has been taken within the fault budget. At each point met
past its prefix a path fingerprints its state (the run's journal without times and
texts, the effects landed, the faults left, the failures set to repeat): a state met
before ends the path there, merged into the path that met it first, whose continuations
already cover it (sagas have no loops, so that path's subtree is complete by then).

Replay, not fork: the choice points come mid-pass, where the engine's flows are suspended
generators, which Python cannot copy; a fork at the quiet moments between passes would
still copy the journal, which bench/explore.py measures at a third to two thirds of a
whole path's replay (the 5- and 50-step sagas: ~170 µs of ~500, ~1.6 ms of ~2.5 ms), for
a saving of at most the rest. A path costs about one run of the saga on the memory
engine, the yardstick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, RetryPolicy, Saga, SagaStep
from concordia.explore import properties
from concordia.explore.failures import (
    ErrorKind,
    action_options,
    compensation_error,
    compensation_options,
    error_kinds,
)
from concordia.explore.judge import PathJudge, PathMatch
from concordia.explore.model import (
    Act,
    Bounds,
    Choice,
    Ending,
    Exploration,
    Option,
    PathRecord,
    Point,
    PointKind,
    Violation,
)
from concordia.explore.oracle import Chooser, Oracle, PathMerged, Script, next_prefix
from concordia.explore.samples import sample
from concordia.explore.world import (
    OWNER,
    ROOT,
    CallAt,
    ExploreClock,
    WorkerDied,
    World,
    fresh_store,
    stub_registry,
)
from concordia.runtime.core import Core
from concordia.runtime.invoke import Invocation, Outcome
from concordia.runtime.planner import retry_policy
from concordia.runtime.views import RunView, read_view
from concordia.store.memory import MemoryStore
from concordia.store.records import ItemRecord, StepRecord


class Workbench:
    """The engine's core for one definition tree, reused by every path of every saga."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.clock = ExploreClock()
        self.core = Core(catalog, stub_registry(catalog), MemoryStore(),
                         {"clock": self.clock, "check_bindings": False, "owner": OWNER})
        self.judge: PathJudge | None = None
        journaling = self.core.executor.journaling

        def write_now(fn: Any) -> Any:
            return fn(self.core.store)

        async def write_async(fn: Any) -> Any:
            return fn(self.core.store)

        journaling.bind_store(write_now, write_async)
        book = self.core.book
        for key, spec in list(book.matches.items()):
            book.matches[key] = PathMatch(spec, self._current_judge, key[2])
        self._worst: dict[tuple[str, int], float] = {}
        self._explorers: dict[tuple[str, int, Bounds], Explorer] = {}

    def _current_judge(self) -> PathJudge:
        assert self.judge is not None
        return self.judge

    def explorer(self, saga: Saga, bounds: Bounds) -> Explorer:
        key = (saga.name, saga.version, bounds)
        found = self._explorers.get(key)
        if found is None:
            found = self._explorers[key] = Explorer(self, saga, bounds)
        return found

    def child_worst(self, name: str, version: int | None, bounds: Bounds) -> float:
        """A child saga's worst case: the longest of its own paths (explored once)."""
        saga = self.catalog.saga(name, version)
        key = saga.key
        if key not in self._worst:
            self._worst[key] = math.inf  # a cycle (refused by validation) stays unbounded
            self._worst[key] = self.explorer(saga, bounds).explore().worst_duration
        return self._worst[key]


class ExploringWorld(World):
    """The world of an exploration: the oracle answers every handler call."""

    def __init__(self, bench: Workbench, explorer: Explorer, chooser: Chooser) -> None:
        super().__init__(bench.core, bench.clock, explorer.saga, chooser, explorer.run_input,
                         lambda name, version: bench.child_worst(name, version,
                                                                 explorer.bounds))
        self.explorer = explorer

    def delivering(self, run_id: str | None, step: str | None) -> None:
        judge = self.explorer.bench.judge
        assert judge is not None
        judge.delivering = None if run_id is None or step is None else (run_id, step)

    def call_many(self, invocations: list[Invocation]) -> list[Outcome]:
        # Whether a cancel may come (the run moves forward) matters only while the path
        # has a fault left to spend on one.
        forward = self.chooser.used < self.chooser.budget and self._moving_forward()
        outcomes: list[Outcome] = []
        answered: list[tuple[Invocation, CallAt, Option]] = []
        for invocation in invocations:
            at = CallAt.of(invocation.ctx)
            outcome, option = self.answer(invocation, at, forward)
            answered.append((invocation, at, option))
            outcomes.append(outcome)
        self.calls_took(invocations)
        if any(option.act == Act.CRASH for _, _, option in answered):
            # The other calls of the batch ran too, and their results die with the worker:
            # a handler that checkpoints before its effect left its checkpoint, though.
            for invocation, at, option in answered:
                if option.act in (Act.OK, Act.CANCEL) and self._checkpoints(at):
                    invocation.ctx.checkpoint({"explored": "checkpoint before the effect"})
            raise WorkerDied
        return outcomes

    def _checkpoints(self, at: CallAt) -> bool:
        step = self.saga.step(at.step)
        return at.phase == "action" and isinstance(step, ActionStep) and step.checkpoints

    def answer(self, invocation: Invocation, at: CallAt, forward: bool
               ) -> tuple[Outcome, Option]:
        explorer = self.explorer
        step = explorer.saga.step(at.step)
        assert isinstance(step, ActionStep)
        policy = retry_policy(explorer.saga, step, compensation=at.phase == "compensation")
        if at.phase == "compensation":
            option = self.option_for(at, forward,
                                     lambda: compensation_options(policy, at.attempt))
            self.record(at, option, policy)
            if option.act == Act.OK:
                return Outcome(True, {}), option
            return Outcome(False, error=compensation_error()), option
        option = self.option_for(at, forward, lambda: explorer.action_options(
            at.step, policy, at.attempt, forward))
        if option.act == Act.CANCEL:
            self._cancel()
        self.record(at, option, policy)
        if option.act in (Act.OK, Act.CANCEL):
            return Outcome(True, {}), option
        if (option.after or option.act == Act.CRASH) and step.checkpoints:
            # Its handler checkpointed before the effect: the journal learns of it.
            invocation.ctx.checkpoint({"explored": "checkpoint before the effect"})
        if option.act == Act.CRASH:
            return Outcome(True, {}), option
        return Outcome(False, error=explorer.error(at.step, option.error)), option


@dataclass
class PathEnd:
    """What the world and the journal say at the end of one path."""

    record: PathRecord
    trace: list[tuple[int, int]]
    fingerprints: list[tuple[int, float]]


class Explorer:
    """Every path of one saga within the bounds (see the module docstring)."""

    def __init__(self, bench: Workbench, saga: Saga, bounds: Bounds) -> None:
        self.bench = bench
        self.saga = saga
        self.bounds = bounds
        self.run_input: dict[str, Any] = sample(saga.input_schema) or {}
        self.kinds: dict[str, list[ErrorKind]] = {
            s.name: error_kinds(saga, s) for s in saga.steps if isinstance(s, ActionStep)}
        self._errors = {(name, k.name): k for name, kinds in self.kinds.items()
                        for k in kinds}
        self._result: Exploration | None = None
        self.current: World | None = None  # the world of the path being run
        self._options: dict[tuple[str, int, bool], list[Option]] = {}
        self.stage_of = bench.core.book.of(saga.name, saga.version).stage_of

    def action_options(self, step: str, policy: RetryPolicy, attempt: int,
                       forward: bool) -> list[Option]:
        """An attempt's options (the same for every path: built once)."""
        key = (step, attempt, forward)
        found = self._options.get(key)
        if found is None:
            found = self._options[key] = action_options(self.kinds[step], policy, attempt,
                                                        crash=True, cancel=forward)
        return found

    def error(self, step: str, name: str | None) -> Exception:
        kind = self._errors.get((step, name or ""))
        if kind is None:
            return RuntimeError(f"explored: {name}")
        return kind.make()

    # -- one path ----------------------------------------------------------------------

    def run_path(self, chooser: Chooser, number: int) -> tuple[PathRecord, World]:
        """Run one path with ``chooser`` deciding; merged paths end early."""
        bench = self.bench
        fresh_store(bench.core)
        bench.clock.reset()
        world = self.current = ExploringWorld(bench, self, chooser)
        bench.judge = bench.core.executor.journaling.judge = PathJudge(
            bench.catalog, self.saga, ROOT, self.bounds.items, chooser.choose)
        merged: int | None = None
        try:
            run = world.run()
            status = str(run.status)
            error = run.error
        except PathMerged as stop:
            merged, status, error = stop.into, "merged", None
        judge = bench.judge
        loaded = bench.core.store.load(ROOT)
        ledger = world.ledger
        effects = tuple(ledger.effects.values())
        if ledger.ending is not None and merged is None:
            status = str(ledger.ending)
        # A run that waits on purpose for an event that never comes has ended nothing:
        # what it did is in flight, not left behind.
        found = (properties.leftovers(self.saga, loaded, effects, status)
                 if loaded and ledger.ending != Ending.WAITS_FOREVER else [])
        duration = world.elapsed()
        violations: list[Violation] = list(judge.violations)
        if merged is None:
            violations += properties.leftover_violations(self.saga, found, status)
            violations += properties.order_violations(self.stage_of, ledger.calls)
            violations += properties.termination_violations(
                self.saga, ledger.ending, ledger.waits_forever_at, duration,
                ledger.unbounded_at)
        record = PathRecord(number, tuple(chooser.choices), tuple(ledger.calls), status,
                            effects, tuple(found), duration, tuple(violations), merged, error,
                            chooser.states)
        return record, world

    def fingerprint(self, world: World, point: Point) -> int:
        """The state a path is in at ``point``: what decides everything after it."""
        loaded = world.store.load(ROOT)
        assert loaded is not None
        run = loaded.run
        now = world.clock.now()
        steps = tuple(_record_state(r, now) for r in loaded.steps.values())
        items = tuple(_record_state(r, now) for r in loaded.items.values())
        children = tuple(sorted(
            (r.id, str(r.status), r.state) for r in world.store.list_runs(limit=10_000)
            if r.parent_run_id == ROOT))
        ledger = world.ledger
        chooser = world.chooser
        return hash((point.kind, point.key, str(run.status), run.state,
                     run.cancel_reason is not None, run.compensated_any, steps, items,
                     children, tuple(ledger.effects), tuple(sorted(ledger.sticky.items())),
                     chooser.budget - chooser.used, ledger.unbounded))

    # -- every path --------------------------------------------------------------------

    def explore(self) -> Exploration:
        """Every path within the bounds (computed once, then kept)."""
        if self._result is not None:
            return self._result
        saga, bounds = self.saga, self.bounds
        # The children's worst cases first: exploring one uses the workbench's journal.
        for step in saga.steps:
            if isinstance(step, SagaStep):
                self.bench.child_worst(step.saga, step.version, bounds)
        result = Exploration(saga.name, saga.version, bounds)
        first: dict[int, int] = {}  # state -> the path that met it first
        remaining: dict[int, float] = {}  # state -> longest time from it to an end
        prefix: list[int] | None = []
        while prefix is not None:
            if len(result.paths) >= bounds.max_paths:
                result.truncated = True
                break
            number = len(result.paths) + 1
            met: list[tuple[int, float]] = []

            def seen(point: Point, number: int = number,
                     met: list[tuple[int, float]] = met) -> int | None:
                if point.kind in _MID_PASS:
                    return None  # the pass has not written what it did yet: no state
                world = self.current
                assert world is not None
                state = self.fingerprint(world, point)
                if state in first:
                    met.append((state, -1.0))
                    return first[state]
                first[state] = number
                met.append((state, world.elapsed()))
                return None

            oracle = Oracle(prefix, bounds.faults, seen)
            record, world = self.run_path(oracle, number)
            if record.merged_into is not None and met:
                state = met[-1][0]
                tail = remaining.get(state, 0.0)
                record.duration = world.elapsed() + tail
                base = result.paths[record.merged_into - 1]
                record.status, record.leftovers = base.status, base.leftovers
            for state, at in met:
                if at >= 0:
                    remaining[state] = max(remaining.get(state, 0.0), record.duration - at)
            result.paths.append(record)
            prefix = next_prefix(oracle.trace)
        result.states = len(first)
        result.counterexamples = counterexamples(self, result.paths)
        result.static = properties.deadline_violations(saga)
        self._result = result
        return result

    def replay(self, choices: Sequence[Choice]) -> PathRecord:
        """Run the path these choices name (by point), happy wherever they say nothing."""
        record, _ = self.run_path(Script.of(choices), 0)
        return record

    def view_of(self, path: PathRecord) -> RunView:
        """The run of ``path`` as ``get_run`` shows it (the path replayed)."""
        _, world = self.run_path(Script.of(path.choices), path.number)
        return world.drive(read_view(self.bench.core.order_of, ROOT))


# Points met inside a pass before it writes (a judgement the pass asks for): the journal
# does not hold the pass's work yet, so no state is taken there. Handler calls come after
# the pass's commit (its start is durable first), the world's moves between passes.
_MID_PASS = frozenset({PointKind.CONDITION, PointKind.ITEMS, PointKind.POLICY})


def _record_state(rec: StepRecord | ItemRecord, now: float) -> tuple[Any, ...]:
    wake = None if rec.wake_at is None else round(rec.wake_at - now, 6)
    items = len(rec.items or ()) if isinstance(rec, StepRecord) else None
    name = rec.name
    return (name, str(rec.status), rec.attempt, rec.checkpoint is not None,
            str(rec.comp_status), rec.comp_attempt, rec.caught, items, wake)


def counterexamples(explorer: Explorer, paths: Sequence[PathRecord]
                    ) -> list[tuple[Violation, PathRecord]]:
    """For each breach (a property and what it is about), the path that shows it with the
    fewest faults, then the fewest calls; checked minimal (no fault of it can be
    dropped: :func:`minimal`)."""
    best: dict[tuple[str, str], tuple[Violation, PathRecord]] = {}
    for path in paths:
        if path.merged_into is not None:
            continue
        for violation in path.violations:
            key = (str(violation.property), violation.subject)
            held = best.get(key)
            if held is None or _shorter(path, held[1]):
                best[key] = (violation, path)
    out = []
    for key, (violation, path) in best.items():
        out.append((violation, minimal(explorer, path, key)))
    return out


def _shorter(a: PathRecord, b: PathRecord) -> bool:
    return (len(a.faults), len(a.calls), a.number) < (len(b.faults), len(b.calls), b.number)


def minimal(explorer: Explorer, path: PathRecord, key: tuple[str, str]) -> PathRecord:
    """``path`` with every fault dropped that the breach ``key`` does not need (replayed
    without it, the breach is still there)."""
    current = path
    # A breach shown with one fault is minimal already: without it the path is the happy
    # one, explored first, which shows no breach of it (else it would be the one chosen).
    changed = len(path.faults) > 1
    while changed:
        changed = False
        for fault in current.faults:
            kept = [c for c in current.choices if c is not fault]
            again = explorer.replay(kept)
            if any((str(v.property), v.subject) == key for v in again.violations) and (
                    len(again.faults) < len(current.faults)):
                again.number = path.number
                current = again
                changed = True
                break
    return current
