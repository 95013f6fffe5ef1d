"""Conditions (``if``) and catch tables (``catch``), the constructs that steer a stage.

- ``check``: each step's ``if``; true journals the step ``ready``, false ``skipped``
  (never compensated), anything but a boolean fails the step;
- ``catch``: the failed step's matching entry (chosen when it failed, see
  :mod:`concordia.runtime.catching`): its ``result`` mapping is evaluated with the error
  as ``error``, and the step is journaled ``caught`` with that result plus ``error``;
  the planner then goes on (or jumps to the entry's ``goto``). A mapping that cannot be
  evaluated leaves the step failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concordia.definitions.models import ActionStep, SagaStep
from concordia.errors import ExpressionError, ValueLimitError
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow
from concordia.runtime.emitter import run_fields
from concordia.runtime.kinds.base import Carry, OnJournal, Stop
from concordia.runtime.pending import journal_value
from concordia.runtime.run_pass import RunPass
from concordia.status import Kind, StepStatus


class Conditions(OnJournal):
    """Conditions and catch tables (see the module docstring)."""

    def carries(self) -> Mapping[DecisionKind, Carry]:
        return {DecisionKind.CHECK: self.check, DecisionKind.CATCH: self.catch}

    def check(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        for name in decision.steps:
            self._check(p, name, now)
        return None
        yield  # a flow, though it asks for nothing

    def _check(self, p: RunPass, name: str, now: float) -> None:
        step = p.compiled.steps[name]
        rec = p.steps[name]
        source = step.if_
        assert source is not None
        try:
            holds = self.j.judge.condition(name, source, p.run, p.results)
            if not isinstance(holds, bool):
                raise ExpressionError(source, f"gives {type(holds).__name__}, not a boolean: "
                                              "a condition must be true or false")
        except ExpressionError as exc:
            self.j.fail(p, step, rec, exc, now, retry=False)
            return
        p.pending.touch(rec)
        if holds:
            rec.status = StepStatus.READY
            p.pending.note(now, Kind.STEP_READY, name, condition=source)
            return
        rec.status = StepStatus.SKIPPED
        rec.finished_at = now
        p.pending.note(now, Kind.STEP_SKIPPED, name, condition=source)

    def catch(self, p: RunPass, decision: Decision, now: float) -> Flow[Stop]:
        name = decision.steps[0]
        step = p.compiled.steps[name]
        rec = p.steps[name]
        assert isinstance(step, ActionStep | SagaStep)
        assert rec.caught is not None
        clause = step.catch[rec.caught]
        error: dict[str, Any] = dict(rec.error_detail or {"message": rec.error})
        scope = {"input": p.run.input, "results": p.results, "run": run_fields(p.run),
                 "error": error}
        try:
            mapped = {key: self.j.judge.caught(name, source, scope)
                      for key, source in clause.result.items()}
            result = journal_value({**mapped, "error": error}, f"the result of step {name}")
        except (ExpressionError, ValueLimitError) as exc:
            rec.caught = None
            rec.error = f"{rec.error}; its catch result failed: {exc}"
            p.run.error = f"step {name}: {rec.error}"
            p.pending.touch(rec)
            return None
        rec.status = StepStatus.CAUGHT
        rec.result = result
        p.results[name] = result
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_CAUGHT, name, rec.attempt, entry=rec.caught,
                       goto=clause.goto, type=error.get("type"))
        return None
        yield  # a flow, though it asks for nothing
