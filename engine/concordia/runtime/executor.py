"""The pass loop: carries the planner's decisions out for one run at a time.

Each operation is a flow (see :mod:`concordia.runtime.effects`): it reads the run, asks
:func:`~concordia.runtime.planner.plan` what to do, hands the decision to the kind of step
that carries it out (:mod:`concordia.runtime.kinds`), and accumulates the outcome in one
pending commit. The commit is written before a handler is called (so "started" is durable
before the side effect, and the run's lease is taken in it) and when the pass ends (the
lease released); a step's result and the next step's start therefore share one commit.

An error of the engine's own while advancing a run (an expression that cannot be
evaluated, a value the journal refuses) is contained by :meth:`Executor.contain`: it
fails the run's current steps with the error, so the run compensates, or, if even that
cannot be written, parks the run as ``stuck`` for an operator; the worker goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, AwaitStep, PolicyStep, Step
from concordia.errors import ConcordiaError, StoreError, UnknownRunError, ValueRefusedError
from concordia.machine.compile import Move, MoveKind
from concordia.registry import Registry
from concordia.runtime import transitions
from concordia.runtime.book import SagaBook
from concordia.runtime.config import EngineConfig
from concordia.runtime.creation import Creator
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow, read, write
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.journaling import Journaling
from concordia.runtime.kinds.actions import Actions
from concordia.runtime.kinds.awaits import Awaits
from concordia.runtime.kinds.base import Carry, StartsSteps, StepKind
from concordia.runtime.kinds.children import Children
from concordia.runtime.kinds.conditions import Conditions
from concordia.runtime.kinds.fanouts import FanOuts
from concordia.runtime.kinds.policies import Policies
from concordia.runtime.pending import describe
from concordia.runtime.planner import plan
from concordia.runtime.run_pass import NOTHING, PassResult, RunPass
from concordia.status import ACTIVE, HALTED, OPEN_STEP, CompStatus, Kind, RunStatus, StepStatus
from concordia.store.base import ConflictError
from concordia.store.records import Attempted, ItemRecord, Loaded, RunRecord
from concordia.values import check_text, is_id

_log = structlog.get_logger("concordia.engine")

MAX_REASON = 4096  # characters of a cancellation's reason
# Decisions that do work (call handlers, start steps): a draining worker takes none.
_WORK = frozenset(DecisionKind) - {DecisionKind.MOVE, DecisionKind.WAIT, DecisionKind.END}


class Executor:
    """Carries decisions out; shared by the sync and async engines (see the docstring)."""

    def __init__(self, book: SagaBook, catalog: Catalog, registry: Registry, clock: Clock,
                 config: EngineConfig) -> None:
        self.book = book
        self.clock = clock
        self.owner = config.owner
        self.journaling = j = Journaling(book, catalog, registry, clock, config)
        self.creator = Creator(book, clock, config, j.tracer)
        self.awaits = Awaits(j)
        # The kind that starts each type of step, and the kind that carries out each
        # other decision.
        self.starters: dict[type[Step], StartsSteps] = {
            ActionStep: Actions(j), AwaitStep: self.awaits, PolicyStep: Policies(j)}
        kinds: tuple[StepKind, ...] = (*self.starters.values(), FanOuts(j),
                                        Children(j, self.creator), Conditions(j))
        self.carries: dict[DecisionKind, Carry] = {}
        for kind in kinds:
            self.carries.update(kind.carries())

    # -- advancing a run -------------------------------------------------------------------------

    def advance(self, run_id: str, draining: Callable[[], bool] | None = None
                ) -> Flow[PassResult]:
        """Drive one run as far as it can go now.

        The result carries the :class:`HandlerStopError` of a handler that asked the worker
        to stop (its attempt is journaled as failed first). A run another worker holds a
        live lease on is left alone. With ``draining`` true the pass ends before it starts
        another step (the lease released), so a stopping worker finishes the step in hand.
        A run someone else moved meanwhile is passed over again later; an error of the
        engine's own on the run is contained (the run fails its step, or is parked); the
        store being unreachable is raised to the caller.
        """
        try:
            j = self.journaling
            loaded = j.recent.pop(run_id, None)
            # A run this engine last wrote as ended is read again: only another writer can
            # have moved it since (a parent reverting its completed child saga).
            if loaded is None or loaded.run.status not in ACTIVE:
                loaded = yield from self._load_ours(run_id)
            if loaded is None:
                return NOTHING
            run = loaded.run
            if run.status not in ACTIVE or run.leased_to_other(self.owner, self.clock.now()):
                return NOTHING
            if j.tracer.needs(run):  # tracing: the run's trace, once per run and worker
                j.tracer.learn(run, (yield from read(lambda s: s.history(run.id))))
            p = RunPass.of(loaded, self.book.of(run.saga, run.version))
            stop: HandlerStopError | None = None
            while True:
                now = self.clock.now()
                decision = plan(p.compiled, run, p.steps, p.items, now)
                kind = decision.kind
                if kind == DecisionKind.MOVE:
                    assert decision.move is not None
                    j.move(p, decision.move, now)
                    continue
                if kind in _WORK and stop is None and (draining is None or not draining()):
                    stop = yield from self._carrying(p, decision, now)
                    continue
                if kind == DecisionKind.WAIT:
                    run.status = (RunStatus.SUSPENDED if decision.suspended
                                  else RunStatus.WAITING)
                    run.wake_at = decision.wake_at
                    p.pending.dirty = True
                if (yield from j.flush(p, final=True)) and stop is None:
                    continue  # a cancellation arrived while this pass held the lease
                j.remember(Loaded(run, p.steps, p.items))
                return PassResult(p.writes > 0, stop)
        except ConflictError:
            # Someone else (a delivery, another worker) moved the run; the next pass
            # reloads it. Handlers already called re-run with the same idempotency key.
            _log.debug("advance.conflict", run_id=run_id)
        except Exception as exc:
            if not is_run_fault(exc):
                raise
            yield from self.contain(run_id, exc)
        return PassResult(True)

    def _load_ours(self, run_id: str) -> Flow[Loaded | None]:
        """The run, if it is in flight and no other worker holds a live lease on it."""
        loaded = yield from read(lambda s: s.load(run_id))
        return loaded if loaded is not None and self._ours(loaded.run) else None

    def _ours(self, run: RunRecord) -> bool:
        return run.status in ACTIVE and not run.leased_to_other(self.owner, self.clock.now())

    def _carrying(self, p: RunPass, decision: Decision, now: float
                  ) -> Flow[HandlerStopError | None]:
        """The flow that carries ``decision`` out: its kind's own (no frame of the loop's
        in between, for the commonest, a stage of actions)."""
        if decision.kind != DecisionKind.START:
            return self.carries[decision.kind](p, decision, now)
        steps, names = p.compiled.steps, decision.steps
        kind = self.starters[type(steps[names[0]])]
        if len(names) == 1 or all(self.starters[type(steps[n])] is kind for n in names):
            return kind.start(p, names, now)
        return self._start_mixed(p, decision, now)

    def _start_mixed(self, p: RunPass, decision: Decision, now: float
                     ) -> Flow[HandlerStopError | None]:
        # Each step starts by its kind; steps whose handlers are called together (actions)
        # start last, together.
        batched: dict[StartsSteps, list[str]] = {}
        for name in decision.steps:
            kind = self.starters[type(p.compiled.steps[name])]
            if kind.batched:
                batched.setdefault(kind, []).append(name)
            else:
                yield from kind.start(p, [name], now)
        stop: HandlerStopError | None = None
        for kind, names in batched.items():
            stop = (yield from kind.start(p, names, now)) or stop
        return stop

    # -- containing the engine's own errors ------------------------------------------------------

    def contain(self, run_id: str, error: BaseException) -> Flow[None]:
        """Record an engine error met while advancing ``run_id`` so the worker can go on.

        Moving forward, the current stage's open steps fail with the error (not retried:
        it would happen again), so the next pass compensates. Otherwise, or if that
        cannot be written, the run is parked as ``stuck`` with the error, visible to
        ``inspect`` and ``runs`` and resumable with ``retry`` after a fix.
        """
        j = self.journaling
        message = f"engine error: {describe(error)}"
        _log.error("run.engine_error", run_id=run_id, error=message)
        j.forget(run_id)
        try:
            loaded = yield from self._load_ours(run_id)
            if loaded is None:
                return None
            run = loaded.run
            compiled = self.book.of(run.saga, run.version)
            stage = compiled.forward_stage(run.state)
            if stage is not None:
                p = RunPass.of(loaded, compiled)
                now = self.clock.now()
                failing = [p.steps[n] for n in compiled.stages[stage]
                           if p.steps[n].status in OPEN_STEP]
                if failing:
                    for rec in failing:
                        if rec.status == StepStatus.AWAITING:
                            p.pending.awaits_remove.append((run.id, rec.name))
                        j.fail(p, compiled.steps[rec.name], rec, EngineFault(message), now,
                               retry=False)
                    yield from j.flush(p, final=True)
                    return None
        except ConflictError:
            return None  # someone else moved the run on
        except Exception as again:  # contain whatever it is, then park
            message = f"{message}; recording it failed: {describe(again)}"
        parked = transitions.park(run_id, self.owner, message, self.clock.now())
        try:
            yield from write(lambda s: s.patch(parked))
        except ConcordiaError as exc:
            _log.error("run.park_failed", run_id=run_id, error=describe(exc))
        return None

    # -- operations ------------------------------------------------------------------------------

    def request_cancel(self, run_id: str, reason: str) -> Flow[RunRecord]:
        """Ask a run to stop and compensate; returns the run as it stands after the ask."""
        self.journaling.forget(run_id)
        check_text(reason, "the cancellation's reason", MAX_REASON)
        run = (yield from read(lambda s: s.get_run(run_id))) if is_id(run_id) else None
        if run is None:
            raise UnknownRunError(run_id)
        compiled = self.book.of(run.saga, run.version)
        if run.status not in ACTIVE or compiled.forward_stage(run.state) is None:
            raise ConcordiaError(f"run {run_id} is {run.status} ({run.state}); only a run "
                                 "moving forward can be cancelled")
        patch = transitions.cancel_request(run_id, reason, self.clock.now())
        patched = yield from write(lambda s: s.patch(patch))
        if patched.run is None:
            raise UnknownRunError(run_id)
        return patched.run

    def retry(self, run_id: str) -> Flow[None]:
        """Resume a run halted in ``compensation_failed`` or ``stuck`` (after a fix)."""
        j = self.journaling
        j.forget(run_id)
        loaded = (yield from read(lambda s: s.load(run_id))) if is_id(run_id) else None
        if loaded is None:
            raise UnknownRunError(run_id)
        run = loaded.run
        if run.status not in HALTED:
            raise ConcordiaError(f"run {run_id} is {run.status}; only a run in "
                                 "compensation_failed or stuck can be retried")
        compiled = self.book.of(run.saga, run.version)
        p = RunPass.of(loaded, compiled)
        now = self.clock.now()
        if run.status == RunStatus.STUCK:
            run.status = RunStatus.RUNNING
            p.pending.dirty = True
        else:
            stuck: list[Attempted] = [
                *(r for r in p.steps.values() if r.comp_status == CompStatus.FAILED),
                *(i for i in p.items.values() if i.comp_status == CompStatus.FAILED)]
            stage = max((compiled.stage_of[r.step if isinstance(r, ItemRecord) else r.name]
                         for r in stuck), default=0)
            for rec in stuck:
                rec.comp_status = None
                rec.comp_attempt = 0
                p.pending.touch(rec)
            j.move(p, Move(MoveKind.RESUME, stage), now)
        p.pending.note(now, Kind.RUN_RETRIED)
        yield from j.flush(p, final=True)
        return None


def is_run_fault(exc: Exception) -> bool:
    """Whether an error raised while advancing is the run's (contain it) or its
    surroundings' (the store is unreachable: the caller must see it)."""
    if isinstance(exc, ValueRefusedError):  # the run's own value, refused: contain it
        return True
    return not isinstance(exc, StoreError | HandlerStopError)


class EngineFault(Exception):
    """The engine's own error while advancing a run, journaled as the step's failure."""
