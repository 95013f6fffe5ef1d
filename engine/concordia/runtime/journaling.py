"""What every kind of step does to a run's journal, in one place: the services the pass
loop and the step kinds (:mod:`concordia.runtime.kinds`) share.

- :meth:`Journaling.flush`: write the pending commit (every commit of a pass holds the
  run's lease; the last one releases it);
- :meth:`Journaling.succeed` and :meth:`Journaling.fail`: journal a step's success
  (emitting its events) or a failed attempt (a retry on a timer, or failed for good, with
  the catch entry that takes the error);
- :meth:`Journaling.move`: take a move of the compiled machine, with what it implies (the
  run's end events, a failing stage's open steps abandoned, a child's end waking its
  parent);
- :meth:`Journaling.invocation` and :meth:`Journaling.checkpoints`: a handler call under
  its timeout, and where its checkpoints go;
- the runs this engine wrote last (:meth:`remember`, :meth:`forget`), taken instead of a
  read when it advances them next.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, SagaStep, Step
from concordia.errors import EventError, ExpressionError
from concordia.machine.compile import Move, MoveKind, Phase
from concordia.registry import Binding, Registry
from concordia.runtime import transitions
from concordia.runtime.attempts import failed_attempt
from concordia.runtime.book import SagaBook
from concordia.runtime.config import EngineConfig
from concordia.runtime.effects import Flow, committing, publish_best_effort
from concordia.runtime.emitter import Emitter
from concordia.runtime.invoke import Invocation, StepAbandonedError
from concordia.runtime.judge import Evaluating, Judge
from concordia.runtime.pending import journal_value
from concordia.runtime.run_pass import RunPass
from concordia.status import END_KIND, FINAL, OPEN_STEP, Kind, RunStatus, StepStatus
from concordia.store.base import Store
from concordia.store.changes import StepRef
from concordia.store.records import Attempted, HistoryEntry, Loaded, StepRecord
from concordia.tracing import make_tracer

_RECENT = 10_000  # runs whose last written state an engine keeps
# How a checkpoint reaches the store from a handler: a blocking write (sync handlers)
# and an awaitable one (async handlers on the async engine).
WriteNow = Callable[[Callable[[Store], Any]], Any]
WriteAsync = Callable[[Callable[[Store], Any]], Awaitable[Any]]


class Journaling:
    """The services the pass loop and the step kinds share (see the module docstring)."""

    def __init__(self, book: SagaBook, catalog: Catalog, registry: Registry, clock: Clock,
                 config: EngineConfig) -> None:
        self.book = book
        self.catalog = catalog
        self.registry = registry
        self.clock = clock
        self.config = config
        self.owner = config.owner
        # Conditions, lists, mapped values, payloads and policy decisions: evaluated, or
        # answered by the failure-path explorer's judge (see concordia.runtime.judge).
        self.judge: Judge = Evaluating()
        self.emitter = Emitter(catalog, config.source,
                               lambda emit, run, results: self.judge.payload(emit, run, results))
        # Tracing (concordia.tracing): spans at run, attempt and compensation boundaries.
        self.tracer = make_tracer()
        self.emitter.traceparent_of = self.tracer.traceparent
        # The state of runs this engine wrote last (their records after its commit),
        # taken instead of a read when it advances them next. Optimistic: if anyone else
        # moved a run meanwhile, the pass's first commit — always before any handler is
        # called — is refused, and the run is read again.
        self.recent: OrderedDict[str, Loaded] = OrderedDict()
        self.write_now: WriteNow = _unbound
        self.write_async: WriteAsync = _unbound_async

    def bind_store(self, write_now: WriteNow, write_async: WriteAsync) -> None:
        """How checkpoints reach the store, as the engine driving the flows writes."""
        self.write_now = write_now
        self.write_async = write_async

    # -- the runs written last -----------------------------------------------------------

    def remember(self, loaded: Loaded) -> None:
        """Keep a run as this engine last wrote it (its records are handed over)."""
        recent = self.recent
        recent[loaded.run.id] = loaded
        if len(recent) > _RECENT:
            recent.popitem(last=False)

    def forget(self, run_id: str) -> None:
        self.recent.pop(run_id, None)

    # -- commits -------------------------------------------------------------------------

    def flush(self, p: RunPass, *, final: bool) -> Flow[bool]:
        """Write the pending commit; return whether a cancellation arrived meanwhile.

        Every commit of a pass holds the run's lease; the last one releases it.
        """
        run = p.run
        if final:
            if run.lease_owner is not None:
                run.lease_owner = run.lease_expires = None
                p.pending.dirty = True
        else:
            run.lease_owner = self.owner
            run.lease_expires = self.clock.now() + self.config.lease_ttl
            # Worked on under a lease, the run is running: left 'waiting' or 'suspended'
            # with the timer that woke it, it would look due to every other worker.
            run.status = RunStatus.RUNNING
            run.wake_at = None
        if not p.pending.dirty:
            return False
        change, transient = p.pending.take(self.clock.now())
        had_cancel = run.cancel_reason is not None
        yield committing(change)
        p.writes += 1
        if transient:
            yield from publish_best_effort(transient)
        return run.cancel_reason is not None and not had_cancel

    # -- a step's outcome ----------------------------------------------------------------

    def succeed(self, p: RunPass, step: Step, rec: StepRecord, now: float) -> None:
        """Journal the step succeeded with ``rec.result`` and emit its events; raises
        EventError/ExpressionError (the step untouched) if an event cannot be made."""
        old = rec.status
        rec.status = StepStatus.SUCCEEDED  # emit mappings may read this step's own result
        p.results[step.name] = rec.result
        try:
            self.emitter.emit(p.run, p.results, step.emit, p.pending, now)
        except (EventError, ExpressionError):
            rec.status = old
            del p.results[step.name]
            raise
        rec.error = None
        rec.error_detail = None
        rec.wake_at = None
        rec.finished_at = now
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_SUCCEEDED, step.name, rec.attempt, result=rec.result)

    def succeed_or_fail(self, p: RunPass, step: Step, rec: StepRecord, now: float) -> None:
        """:meth:`succeed`, or the step failed for good if its events cannot be made."""
        try:
            self.succeed(p, step, rec, now)
        except (EventError, ExpressionError) as exc:
            self.fail(p, step, rec, exc, now, retry=False)

    def fail(self, p: RunPass, step: Step, rec: Attempted, error: BaseException, now: float,
             *, retry: bool = True, key: str | None = None) -> None:
        """Journal a failed attempt of a step (or of one of its items): retry after a
        delay, or fail it for good (caught, if an entry of the step's catch table takes the
        error). ``key`` seeds the retry's jitter (the step's own by default)."""
        table = step.catch if isinstance(step, ActionStep | SagaStep) else ()
        failed = failed_attempt(p.pending, p.compiled.saga, step, rec, error, now,
                                key=key or f"{p.run.id}:{step.name}", retry=retry,
                                catch=table)
        if failed and rec.caught is None and isinstance(rec, StepRecord):
            p.run.error = f"step {step.name}: {rec.error}"

    # -- handler calls -------------------------------------------------------------------

    def invocation(self, p: RunPass, step: ActionStep, binding: Binding, ctx: Any
                   ) -> Invocation:
        """A call under the step's timeout (its own, its saga's, or the engine's)."""
        declared = step.timeout or p.compiled.saga.defaults.timeout
        return Invocation(binding, ctx, declared or self.config.step_timeout,
                          declared=declared is not None)

    def checkpoints(self, run_id: str, rec: Attempted, target: StepRef) -> Checkpoints:
        """Where the checkpoints of ``rec``'s current attempt go (``target``: its step's
        name, or its item's key)."""
        return Checkpoints(self, run_id, rec, target)

    # -- machine moves -------------------------------------------------------------------

    def move(self, p: RunPass, move: Move, now: float) -> None:
        """Take ``move`` in the compiled machine (emitting and journaling what it implies)."""
        run, compiled, pending = p.run, p.compiled, p.pending
        source = run.state
        target = compiled.move(source, move)
        if target == RunStatus.COMPLETED and compiled.saga.on_complete:
            try:
                self.emitter.emit(run, p.results, compiled.saga.on_complete, pending, now)
            except (EventError, ExpressionError) as exc:
                run.error = f"on_complete: {exc}"
                pending.note(now, Kind.RUN_EMIT_FAILED, error=str(exc))
                move = Move(MoveKind.FAIL)
                target = compiled.move(source, move)
        kind = move.kind
        if kind == MoveKind.CANCEL:
            run.error = f"cancelled: {run.cancel_reason}"
        if kind in (MoveKind.FAIL, MoveKind.CANCEL):
            self.abandon_stage(p)
        if kind == MoveKind.GOTO:
            assert move.stage is not None
            for stage in compiled.stages[compiled.where[source].stage + 1:move.stage]:
                for name in stage:
                    p.steps[name].status = StepStatus.SKIPPED
                    pending.touch(p.steps[name])
        run.state = target
        pending.history.append(HistoryEntry(run.id, now, Kind.STATE, None, None,
                                            {"from": source, "to": target,
                                             "event": move.event}))
        if target in compiled.where:
            run.status = RunStatus.RUNNING
        else:
            self._ended(p, RunStatus(target), now)
        pending.dirty = True

    def _ended(self, p: RunPass, status: RunStatus, now: float) -> None:
        run, pending = p.run, p.pending
        run.status = status
        run.wake_at = None
        if status not in (RunStatus.COMPLETED, RunStatus.COMPENSATION_FAILED):
            try:
                self.emitter.emit(run, p.results, p.compiled.saga.on_failure, pending, now)
            except (EventError, ExpressionError) as exc:
                pending.note(now, Kind.RUN_EMIT_FAILED, error=str(exc))
        pending.note(now, END_KIND[status], error=run.error)
        if run.parent_run_id is not None and status in FINAL:
            # A child saga's end wakes its parent's waiting step, in this commit; the
            # parent as this engine last wrote it is stale from then on.
            pending.also.append(transitions.wake(run.parent_run_id, str(run.parent_step),
                                                 now))
            self.forget(run.parent_run_id)
        self.tracer.run_ended(run, status)  # tracing

    def abandon_stage(self, p: RunPass) -> None:
        """Stop the open steps (and fan-out items) of a failing or cancelled stage: no new
        attempts, no timers, no waiting."""
        compiled = p.compiled
        where = compiled.where[p.run.state]
        assert where.phase == Phase.FORWARD
        for name in compiled.stages[where.stage]:
            rec = p.steps[name]
            if rec.status == StepStatus.AWAITING:
                p.pending.awaits_remove.append((p.run.id, name))
            if rec.status in OPEN_STEP:
                _abandon(p, rec)
            if name in compiled.fan_outs:
                self.abandon_items(p, name)

    def abandon_items(self, p: RunPass, name: str) -> None:
        """Stop a fan-out's open items: no new attempt, no timer (items never started
        have no record, and get none)."""
        for index in range(len(p.steps[name].items or ())):
            item = p.items.get((name, index))
            if item is not None and item.status in OPEN_STEP:
                _abandon(p, item)


def _abandon(p: RunPass, rec: Attempted) -> None:
    rec.status = StepStatus.ABANDONED
    rec.wake_at = None
    p.pending.touch(rec)


class Checkpoints:
    """Where one attempt's ``ctx.checkpoint`` goes: the store, unless the attempt is over."""

    __slots__ = ("attempt", "journaling", "rec", "run_id", "target")

    def __init__(self, journaling: Journaling, run_id: str, rec: Attempted,
                 target: StepRef) -> None:
        self.journaling = journaling
        self.run_id = run_id
        self.rec = rec
        self.attempt = rec.attempt
        self.target = target

    def _accept(self, data: Any) -> Any:
        rec = self.rec
        if rec.status != StepStatus.RUNNING or rec.attempt != self.attempt:
            # A sync handler abandoned by its timeout runs on in its thread; what it
            # checkpoints now would overwrite a later attempt's progress.
            raise StepAbandonedError(f"attempt {self.attempt} of {rec.name} is over "
                                     "(timed out); not checkpointed")
        return journal_value(data, f"step {rec.name} checkpoint")

    def _write(self, data: Any) -> Callable[[Store], bool]:
        journaling = self.journaling
        patch = transitions.checkpoint(self.run_id, self.target, self.attempt,
                                       journaling.owner, data, journaling.clock.now())
        return lambda store: store.patch(patch).applied

    def _saved(self, data: Any, current: bool) -> None:
        if not current:
            raise StepAbandonedError(f"attempt {self.attempt} of {self.rec.name} is no "
                                     "longer this worker's (its lease moved on); not "
                                     "checkpointed")
        self.rec.checkpoint = data

    def save(self, data: Any) -> None:
        data = self._accept(data)
        self._saved(data, self.journaling.write_now(self._write(data)))

    async def asave(self, data: Any) -> None:
        data = self._accept(data)
        self._saved(data, await self.journaling.write_async(self._write(data)))


def _unbound(fn: Callable[[Store], Any]) -> Any:
    raise RuntimeError("no engine drives this executor's flows")


async def _unbound_async(fn: Callable[[Store], Any]) -> Any:
    raise RuntimeError("no engine drives this executor's flows")
