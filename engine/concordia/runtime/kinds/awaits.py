"""Await steps: suspend the run on an event, resume it when one matches, time out.

Starting an await first looks at the early events buffered for it (an event that arrived
before the run reached the step): a match resumes the step at once. Otherwise the step
waits (``awaiting``, registered for delivery, with a deadline when it has a timeout).
Delivery resumes it (:meth:`Awaits.resume_with`, called by
:mod:`concordia.runtime.delivery`). Past its deadline, the planner starts it again: it
then times out, failing the step (``on_timeout: compensate``) or skipping it and jumping
ahead to the step ``on_timeout`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concordia.definitions.models import AwaitStep
from concordia.machine.compile import Move, MoveKind
from concordia.runtime.effects import Flow, read
from concordia.runtime.emitter import run_fields
from concordia.runtime.kinds.base import OnJournal, Stop, steps_of
from concordia.runtime.run_pass import RunPass
from concordia.status import STEP_SETTLED, Kind, StepStatus
from concordia.store.records import AwaitRecord, StepRecord


class Awaits(OnJournal):
    """Await steps (see the module docstring)."""

    batched = False

    def start(self, p: RunPass, names: Sequence[str], now: float) -> Flow[Stop]:
        for step, rec in steps_of(p, names, AwaitStep):
            if rec.status == StepStatus.AWAITING:  # its deadline passed
                self._time_out(p, step, rec, now)
            else:
                yield from self._suspend(p, step, rec, now)
        return None

    def _suspend(self, p: RunPass, step: AwaitStep, rec: StepRecord, now: float
                 ) -> Flow[None]:
        run, pending = p.run, p.pending
        spec = self.j.book.matches[(run.saga, run.version, step.name)]
        run_scope = {"input": run.input, "results": p.results, "run": run_fields(run)}
        key = spec.run_key(run_scope)
        rec.attempt += 1
        rec.started_at = now
        buffered = yield from read(lambda s: s.find_buffered(step.event, key, now))
        for early in buffered:
            pending.buffered_seen.append(early.event_id)
            if spec.matches({**run_scope, "event": early.envelope}):
                pending.consume.append(early.event_id)
                self.resume_with(p, step, rec, early.envelope, now, early=True)
                return
        rec.status = StepStatus.AWAITING
        # `timeout: none`: no deadline, no timer; only its event (or a cancel) moves it.
        rec.wake_at = None if step.timeout is None else now + step.timeout
        pending.touch(rec)
        pending.awaits_add.append(AwaitRecord(run.id, step.name, step.event, key, run.saga,
                                              run.version))
        pending.note(now, Kind.AWAIT_SUSPENDED, step.name, rec.attempt, event=step.event,
                     key=key)

    def _time_out(self, p: RunPass, step: AwaitStep, rec: StepRecord, now: float) -> None:
        run, pending = p.run, p.pending
        pending.awaits_remove.append((run.id, step.name))
        pending.note(now, Kind.AWAIT_TIMEOUT, step.name, rec.attempt, event=step.event)
        if step.on_timeout == "compensate":
            self.j.fail(p, step, rec, TimeoutError(
                f"no {step.event} event within {step.timeout:g}s"), now, retry=False)
            return
        rec.status = StepStatus.SKIPPED
        rec.error = f"timed out waiting for {step.event}"
        rec.wake_at = None
        pending.touch(rec)
        compiled = p.compiled
        target = compiled.stage_of[step.on_timeout]
        current = compiled.stage_of[step.name]
        if all(p.steps[n].status in STEP_SETTLED for n in compiled.stages[current]) and (
                target > current):
            self.j.move(p, Move(MoveKind.GOTO, target), now)

    def resume_with(self, p: RunPass, step: AwaitStep, rec: StepRecord,
                    envelope: dict[str, Any], now: float, *, early: bool = False) -> None:
        """The awaited event arrived: the await step succeeds with the event's data."""
        rec.result = envelope.get("data")
        p.run.cause = envelope["id"]  # events after this step are caused by this event
        p.pending.note(now, Kind.AWAIT_RESUMED, step.name, rec.attempt,
                       event_id=envelope["id"], early=early)
        self.j.succeed_or_fail(p, step, rec, now)
