"""The world around one run: a third driver of the engine's flows, beside ``drive`` and
``adrive``, where a chooser decides what the world does.

:class:`World` implements the :class:`~concordia.runtime.effects.Shell` the engine's
flows run in, over the engine's own :class:`~concordia.runtime.core.Core` on a memory
store and a clock of its own. The core's flows do everything a run does (the planner
decides, the step kinds journal); the world answers only what an engine leaves to the
world outside it:

- each handler call (:meth:`World.call_many`, answered by a subclass: by the oracle when
  exploring, by the user's handlers when checking a path on the real engine);
- at each quiet moment (the run waits), what comes next: an awaited event or the
  deadline, a child saga's end, a retry timer, a cancel;
- a worker dying mid-attempt: the pass is abandoned after its start commit (the flow is
  dropped at the handler call, as a killed process drops it), the dead worker's leases
  are freed, and the run is passed over again, so the attempt repeats with the same
  idempotency key.

Two clocks. The engine's moves only when a timer must fire (a retry, a deadline the path
lets pass), so that time never decides an outcome the path did not choose (a slow
handler does not time out an await beside it). The worst case is counted beside it: a
handler call takes its attempt's whole timeout (the calls of one stage together, the
slowest), a retry waits its longest backoff (jitter included) from when its attempt
ended, an awaited event comes at its deadline counted from when the await began, a child
saga takes its own worst case (at most the step's timeout). Waits that overlap count
once.

A child saga is the child's business: the world never runs it forward; it ends it
completed, compensated or failed through the store (moves of the child's own machine,
committed as the engine commits them, which wake the parent), and lets the engine carry
out a cancel or an undo the parent asks of it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import AwaitStep, RetryPolicy, Saga, SagaStep
from concordia.events.envelope import new_event
from concordia.explore.model import (
    Act,
    Call,
    Effect,
    Ending,
    Option,
    Point,
    PointKind,
)
from concordia.explore.oracle import Chooser
from concordia.explore.samples import sample
from concordia.machine.compile import CompiledSaga, Move, MoveKind
from concordia.registry import Registry
from concordia.runtime import transitions
from concordia.runtime.context import (
    CompensationContext,
    ItemCompensationContext,
    ItemContext,
)
from concordia.runtime.core import Core
from concordia.runtime.effects import Flow, commit, drive
from concordia.runtime.invoke import Invocation, Outcome
from concordia.runtime.kinds.children import child_of, child_run_id
from concordia.runtime.retry import backoff_delay
from concordia.runtime.run_pass import RunPass, with_defaults
from concordia.status import ACTIVE, ENDED, CompStatus, RunStatus, StepStatus
from concordia.store.base import Store
from concordia.store.memory import MemoryStore
from concordia.store.records import Loaded, RunRecord, StepRecord

T = TypeVar("T")
ROOT = "0e7a1000-0000-4000-8000-000000000001"  # the explored run's id: the same on every path
OWNER = "explorer"
SOURCE = "urn:concordia:explore"
START = 1_800_000_000.0
MAX_ROUNDS = 10_000  # world moves on one path: past it the run "does not end"
CANCEL_REASON = "explored: a cancel arrives"


class WorkerDied(BaseException):
    """The worker running a pass dies: everything it held in memory is gone."""


class ExploreClock:
    """The engine's clock on a path: it moves only when the world moves it."""

    def __init__(self) -> None:
        self._now = START

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)

    def advance_to(self, moment: float) -> None:
        self._now = max(self._now, moment)

    def reset(self) -> None:
        self._now = START


def worst_backoff(policy: RetryPolicy, attempt: int) -> float:
    """The longest wait the engine may schedule after failed ``attempt``: its backoff with
    the jitter at its maximum (the engine's own formula, without the jitter, scaled)."""
    still = policy.model_copy(update={"backoff": policy.backoff.model_copy(
        update={"jitter": 0.0})})
    return backoff_delay(still, attempt, "") * (1 + policy.backoff.jitter)


def stub_registry(catalog: Catalog) -> Registry:
    """A registry naming every handler of the tree, none of them ever called."""
    registry = Registry()
    for kind, name, _, _ in catalog.handler_uses():
        if kind == "action" and name not in registry.action_names():
            registry.add_action(name, _never_called)
        elif kind == "compensation" and name not in registry.compensation_names():
            registry.add_compensation(name, _never_called)
    return registry


def _never_called(ctx: Any) -> Any:  # pragma: no cover - the world answers every call
    raise AssertionError("the explorer never calls a handler")


@dataclass
class Ledger:
    """What happened on a path besides the journal: the calls, the effects that landed
    (in order), when each failed attempt failed, the failures that repeat."""

    calls: list[Call] = field(default_factory=list)
    effects: dict[tuple[str, int | None], Effect] = field(default_factory=dict)
    # When each attempt that failed ended and how long its retry may wait (worst case).
    failed_at: dict[tuple[str, str, int | None], tuple[float, float]] = field(
        default_factory=dict)
    # When each wait on the world (an await, a child saga) began, on the worst-case clock.
    waits_from: dict[str, float] = field(default_factory=dict)
    sticky: dict[tuple[str, str, int | None], Option] = field(default_factory=dict)
    unbounded: bool = False  # some wait on it has no bound
    unbounded_at: str | None = None  # the step of the first such wait
    ending: Ending | None = None  # how it ended, when not by a run status
    waits_forever_at: str | None = None

    def landed(self, step: str, index: int | None, how: str) -> None:
        self.effects.setdefault((step, index), Effect(step, index, how))

    def without_bound(self, step: str) -> None:
        self.unbounded = True
        self.unbounded_at = self.unbounded_at or step


@dataclass(frozen=True, slots=True)
class CallAt:
    """A handler call as the world sees it."""

    phase: str
    step: str
    index: int | None
    attempt: int

    @classmethod
    def of(cls, ctx: Any) -> CallAt:
        if isinstance(ctx, ItemCompensationContext):
            return cls("compensation", ctx.step, ctx.index, ctx.attempt)
        if isinstance(ctx, CompensationContext):
            return cls("compensation", ctx.step, None, ctx.attempt)
        if isinstance(ctx, ItemContext):
            return cls("action", ctx.step, ctx.index, ctx.attempt)
        return cls("action", ctx.step, None, ctx.attempt)

    @property
    def name(self) -> str:
        return self.step if self.index is None else f"{self.step}[{self.index}]"

    def point(self) -> Point:
        kind = PointKind.ACTION if self.phase == "action" else PointKind.COMPENSATION
        prefix = "" if self.phase == "action" else "undo "
        return Point(kind, self.step, f"{prefix}{self.name}#{self.attempt}", self.index,
                     self.attempt)


class World(ABC):
    """Drives one run of a saga (see the module docstring); subclasses answer the
    handler calls (:meth:`call_many`)."""

    def __init__(self, core: Core, clock: ExploreClock, saga: Saga, chooser: Chooser,
                 run_input: dict[str, Any],
                 child_worst: Callable[[str, int | None], float]) -> None:
        self.core = core
        self.clock = clock
        self.saga = saga
        self.chooser = chooser
        self.run_input = run_input
        self.child_worst = child_worst
        self.ledger = Ledger()
        self._failing: list[tuple[tuple[str, str, int | None], float]] = []
        self.worst = 0.0  # the worst-case clock: seconds since the run started
        # Whether the saga waits on the world at all (awaits, child sagas): if not, there
        # is no wait to stamp.
        self._waits = any(isinstance(s, AwaitStep | SagaStep) for s in saga.steps)
        self.batches = 0  # handler Calls made so far

    # -- the Shell the engine's flows run in ---------------------------------------------

    @property
    def store(self) -> Store:
        return self.core.store

    def drive(self, flow: Flow[T]) -> T:
        return drive(flow, self.core.store, self)

    @abstractmethod
    def call_many(self, invocations: list[Invocation]) -> list[Outcome]:
        """Answer a Call's handler invocations (the oracle, or the user's handlers)."""

    def calls_took(self, invocations: Sequence[Invocation]) -> None:
        """Count a Call on the worst-case clock: its calls run together, the slowest
        takes its whole timeout; the waits begun before it are stamped first."""
        self.batches += 1
        self.stamp_waits()
        self.worst += max(i.timeout for i in invocations)
        for key, backoff in self._failing:
            self.ledger.failed_at[key] = (self.worst, backoff)
        self._failing.clear()

    def stamp_waits(self) -> None:
        """Note when the waits on the world the run has begun began (the worst-case clock
        has not moved since: it moves at calls and at the world's moves only)."""
        if not self._waits:
            return
        loaded = self.store.load(ROOT)
        if loaded is None:
            return
        for rec in loaded.steps.values():
            if rec.status == StepStatus.AWAITING:
                self.ledger.waits_from.setdefault(rec.name, self.worst)
            else:
                self.ledger.waits_from.pop(rec.name, None)

    def publish(self, envelope: dict[str, Any]) -> None:
        return None  # the explorer's engine has no bus

    def pass_over(self, run_id: str) -> bool:
        if run_id != ROOT:
            run = self.store.get_run(run_id)
            # Only the explored run and its children are ever driven, and a child only
            # when it cancels or undoes itself: moving forward, it is the world's.
            if run is None or run.parent_run_id != ROOT or self._forward(run):
                return False
        return self.drive(self.core.one_pass(run_id, None)).wrote

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    # -- answering calls -----------------------------------------------------------------

    def option_for(self, at: CallAt, forward: bool,
                   options: Callable[[], Sequence[Option]]) -> Option:
        """The option the world takes for a call: a failure repeating on every attempt
        left, else the chooser's pick among ``options()``."""
        sticky = self.ledger.sticky.get((at.phase, at.step, at.index))
        if sticky is not None:
            return sticky
        option = self.chooser.choose(at.point(), list(options()))
        if option.sticky:
            self.ledger.sticky[(at.phase, at.step, at.index)] = option
        return option

    def record(self, at: CallAt, option: Option, policy: RetryPolicy) -> None:
        """Journal the world's side of a call: the call, its effect, when it failed."""
        undoing = False
        if at.phase == "compensation":
            # A step is compensated only while its run undoes; an item also on its own,
            # moving forward (best_effort): ask the journal then.
            run = self.store.get_run(ROOT) if at.index is not None else None
            undoing = at.index is None or (run is not None and self._undoing(run))
        self.ledger.calls.append(Call(at.phase, at.step, at.index, at.attempt,
                                      _outcome(option), undoing, self.batches))
        if at.phase == "action" and (option.act in (Act.OK, Act.CRASH, Act.CANCEL)
                                     or option.after):
            how = ("succeeded" if option.act in (Act.OK, Act.CANCEL) else
                   "the worker died" if option.act == Act.CRASH else "failed after its effect")
            self.ledger.landed(at.step, at.index, how)
        if option.act == Act.FAIL:  # when it failed: once the calls end (call_many)
            self._failing.append(((at.phase, at.step, at.index),
                                  worst_backoff(policy, at.attempt)))

    # -- one run, to its end ---------------------------------------------------------------

    def run(self) -> RunRecord:
        """Start the run and play the world's part until the run ends (or cannot)."""
        saga = self.saga
        self.drive(self.core.start(saga.name, self.run_input, correlation_id=None,
                                   causation_id=None, version=saga.version, run_id=ROOT,
                                   claim=True))
        for _ in range(MAX_ROUNDS):
            try:
                self.drive(self.core.until_idle(None))
            except WorkerDied:
                self._restart()
                continue
            if not self._world_moves():
                break
        else:
            self.ledger.ending = Ending.NO_END
        run = self.store.get_run(ROOT)
        assert run is not None
        return run

    def _restart(self) -> None:
        """A new worker: nothing in memory, the dead one's leases freed at once (the
        engine's own rule for a dead worker of the same machine)."""
        self.core.executor.journaling.recent.clear()
        self.store.leases(transitions.release(OWNER, None))

    def _world_moves(self) -> bool:
        """Make the world's next move; False when the run is over or nothing can move it."""
        loaded = self.store.load(ROOT)
        assert loaded is not None
        run = loaded.run
        if run.status in ENDED:
            return False
        if self._more_to_drive():
            return True  # a child asked to cancel after its pass was passed over: again
        compiled = self.core.book.of(run.saga, run.version)
        steps = with_defaults(compiled, loaded.steps)
        forward = self._forward(run)
        self.stamp_waits()
        # What the run waits for from the world is settled first (an event comes, or its
        # deadline passes; a child ends), then the timers fire.
        waiting = self._waiting_on_world(compiled, steps)
        if waiting is not None:
            return self._settle(run, compiled, waiting[0], waiting[1], forward)
        timer = self._next_timer(loaded)
        if timer is not None:
            wake, worst, what, step = timer
            options = [Option(Act.WAIT, f"{what} runs after its backoff")]
            if forward:
                options.append(Option(Act.CANCEL, "a cancel arrives meanwhile", True))
            point = Point(PointKind.WAIT, step, f"wait {what}")
            if self.chooser.choose(point, options).act == Act.CANCEL:
                self._cancel()
            else:
                self.clock.advance_to(wake)
                self.worst = max(self.worst, worst)
            return True
        self.ledger.ending = self.ledger.ending or Ending.NO_END
        return False

    def _more_to_drive(self) -> bool:
        """Whether a run the world drives is due now (``until_idle`` leaves a run it
        found nothing to do for until its next call)."""
        for run_id in self.store.due_runs(self.clock.now(), 100, OWNER):
            run = self.store.get_run(run_id)
            if run is not None and run.parent_run_id == ROOT and not self._forward(run):
                return True
        return False

    def _waiting_on_world(self, compiled: CompiledSaga, steps: dict[str, StepRecord]
                          ) -> tuple[str, StepRecord] | None:
        for stage in compiled.stages:
            for name in stage:
                rec = steps[name]
                if rec.status != StepStatus.AWAITING:
                    continue
                step = compiled.steps[name]
                if isinstance(step, AwaitStep):
                    return name, rec
                if isinstance(step, SagaStep):
                    child = self.store.get_run(child_of(rec) or child_run_id(ROOT, name))
                    if child is not None and self._forward(child):
                        return name, rec
        return None

    def _settle(self, run: RunRecord, compiled: CompiledSaga, name: str, rec: StepRecord,
                forward: bool) -> bool:
        step = compiled.steps[name]
        if isinstance(step, AwaitStep):
            return self._settle_await(run, step, rec, forward)
        assert isinstance(step, SagaStep)
        return self._settle_child(step, rec, forward)

    def _settle_await(self, run: RunRecord, step: AwaitStep, rec: StepRecord,
                      forward: bool) -> bool:
        options = [Option(Act.EVENT, f"its {step.event} event arrives")]
        if step.timeout is not None:
            options.append(Option(Act.TIMEOUT, f"no {step.event} event within its "
                                               "timeout", True))
        else:
            options.append(Option(Act.NEVER, f"no {step.event} event ever comes", True))
        if forward:
            options.append(Option(Act.CANCEL, "a cancel arrives meanwhile", True))
        option = self.chooser.choose(Point(PointKind.AWAIT, step.name, f"await {step.name}"),
                                     options)
        if option.act == Act.CANCEL:
            self._cancel()
        elif option.act == Act.NEVER:
            self.ledger.without_bound(step.name)
            self.ledger.ending = Ending.WAITS_FOREVER
            self.ledger.waits_forever_at = step.name
            return False
        elif step.timeout is None:  # an event with no deadline: it may come any time
            self.ledger.without_bound(step.name)
            self._deliver(run, step)
        else:
            # At worst the event comes at the deadline: on the worst-case clock, the
            # await's whole timeout from when it began.
            self.worst = max(self.worst, self._began(step.name) + step.timeout)
            if option.act == Act.EVENT:
                self._deliver(run, step)
            else:
                assert rec.wake_at is not None
                self.clock.advance_to(rec.wake_at)
        return True

    def _began(self, step: str) -> float:
        return self.ledger.waits_from.get(step, self.worst)

    def _settle_child(self, step: SagaStep, rec: StepRecord, forward: bool) -> bool:
        options = [Option(Act.COMPLETE, f"the child saga {step.saga} completes"),
                   Option(Act.COMPENSATE, f"the child saga {step.saga} ends compensated",
                          True),
                   Option(Act.FAIL_CHILD, f"the child saga {step.saga} ends failed", True)]
        if rec.wake_at is not None:
            options.append(Option(Act.TIMEOUT, f"the child saga {step.saga} outlasts the "
                                               "step's timeout", True))
        if forward:
            options.append(Option(Act.CANCEL, "a cancel arrives meanwhile", True))
        option = self.chooser.choose(Point(PointKind.CHILD, step.name, f"child {step.name}"),
                                     options)
        if option.act == Act.CANCEL:
            self._cancel()
            return True
        if option.act == Act.TIMEOUT:
            assert rec.wake_at is not None
            assert step.timeout is not None
            self.clock.advance_to(rec.wake_at)
            self.worst = max(self.worst, self._began(step.name) + step.timeout)
            return True
        takes = self.child_worst(step.saga, step.version)
        if step.timeout is not None:
            takes = min(takes, step.timeout)
        if math.isinf(takes):
            self.ledger.without_bound(step.name)
        else:
            self.worst = max(self.worst, self._began(step.name) + takes)
        status = {Act.COMPLETE: RunStatus.COMPLETED, Act.COMPENSATE: RunStatus.COMPENSATED,
                  Act.FAIL_CHILD: RunStatus.FAILED}[option.act]
        self._end_child(child_of(rec) or child_run_id(ROOT, step.name), status)
        return True

    def _next_timer(self, loaded: Loaded) -> tuple[float, float, str, str] | None:
        """The retry the run waits on that fires first: (its wake on the engine's clock,
        when it fires at worst on the worst-case clock, what it is, its step)."""
        best: tuple[float, float, str, str] | None = None
        records: list[tuple[str, int | None, Any]] = [
            (r.name, None, r) for r in loaded.steps.values()]
        records += [(i.step, i.index, i) for i in loaded.items.values()]
        for step, index, rec in records:
            if rec.wake_at is None:
                continue
            if rec.status == StepStatus.WAITING_RETRY:
                phase = "action"
            elif rec.comp_status == CompStatus.WAITING_RETRY:
                phase = "compensation"
            else:
                continue
            failed = self.ledger.failed_at.get((phase, step, index))
            worst = self.worst if failed is None else sum(failed)
            name = step if index is None else f"{step}[{index}]"
            what = f"the retry of {name}" if phase == "action" else f"the retry of undo {name}"
            if best is None or rec.wake_at < best[0]:
                best = (rec.wake_at, worst, what, step)
        return best

    # -- what the world does ---------------------------------------------------------------

    def _deliver(self, run: RunRecord, step: AwaitStep) -> None:
        """The awaited event arrives, through the engine's delivery (and its resume)."""
        event = self.core.catalog.event(step.event, step.version)
        envelope = new_event(step.event, self.event_data(step, event.payload_schema),
                             source=SOURCE, version=event.version,
                             correlation_id=run.correlation_id)
        self.delivering(ROOT, step.name)
        try:
            self.drive(self.core.deliverer.deliver_many([envelope], claim=True))
        finally:
            self.delivering(None, None)

    def event_data(self, step: AwaitStep, schema: dict[str, Any]) -> Any:
        """The data of the event awaited at ``step``: the least its schema accepts."""
        return sample(schema)

    def delivering(self, run_id: str | None, step: str | None) -> None:  # noqa: B027
        """Tell the judge which await the event being delivered is for (a hook: only a
        world whose judge steers events needs it, so by default it does nothing)."""

    def _cancel(self) -> None:
        self.drive(self.core.executor.request_cancel(ROOT, CANCEL_REASON))

    def _end_child(self, child_id: str, status: RunStatus) -> None:
        """End a child saga with ``status`` by its own machine's moves, committed as the
        engine commits them (the commit that ends it wakes the parent)."""
        loaded = self.store.load(child_id)
        if loaded is None:
            return
        run = loaded.run
        compiled = self.core.book.of(run.saga, run.version)
        p = RunPass.of(loaded, compiled)
        now = self.clock.now()
        journaling = self.core.executor.journaling
        if status == RunStatus.COMPLETED:
            moves = [Move(MoveKind.DONE)] * len(compiled.stages)
        else:
            run.error = f"explored: the child saga ends {status}"
            run.compensated_any = status == RunStatus.COMPENSATED
            moves = [Move(MoveKind.FAIL), Move(MoveKind.FINISH_COMPENSATED
                                               if run.compensated_any
                                               else MoveKind.FINISH_FAILED)]
        for move in moves:
            journaling.move(p, move, now)
        change, _ = p.pending.take(now)
        journaling.forget(child_id)
        self.drive(commit(change))

    # -- where a run stands ----------------------------------------------------------------

    def _forward(self, run: RunRecord) -> bool:
        compiled = self.core.book.of(run.saga, run.version)
        return (run.status in ACTIVE and run.cancel_reason is None
                and compiled.forward_stage(run.state) is not None)

    def _undoing(self, run: RunRecord) -> bool:
        compiled = self.core.book.of(run.saga, run.version)
        return run.status in ACTIVE and compiled.forward_stage(run.state) is None

    def _moving_forward(self) -> bool:
        run = self.store.get_run(ROOT)
        return run is not None and self._forward(run)

    def elapsed(self) -> float:
        """The path's worst case so far (inf: some wait on it has no bound)."""
        return math.inf if self.ledger.unbounded else self.worst


def _outcome(option: Option) -> str:
    if option.act == Act.OK:
        return "ok"
    if option.act == Act.CRASH:
        return "worker died"
    if option.act == Act.CANCEL:
        return "ok (a cancel arrived)"
    where = "after its effect" if option.after else "before its effect"
    return f"failed {where} ({option.error})" if option.error else "failed"


def fresh_store(core: Core) -> MemoryStore:
    """A new journal for the next path (the core, its catalog and compiled sagas kept)."""
    store = MemoryStore()
    core.store = store
    core.executor.journaling.recent.clear()
    return store
