"""Carrying out the decisions the language's constructs add to the planner's.

The executor hands every such decision (:data:`~concordia.runtime.decision.CONSTRUCT_KINDS`)
to :meth:`Constructs.carry_out`. Conditions and catch results are evaluated here (the
executor evaluates expressions; the planner decides what their journaled outcome means):

- ``check``: each step's ``if``; true journals the step ``ready``, false ``skipped``
  (never compensated), anything but a boolean fails the step;
- ``catch``: the failed step's matching entry (chosen when it failed, see
  :mod:`concordia.runtime.catching`): its ``result`` mapping is evaluated with the error
  as ``error``, and the step is journaled ``caught`` with that result plus ``error``;
  the planner then goes on (or jumps to the entry's ``goto``). A mapping that cannot be
  evaluated leaves the step failed.

Fan-outs are carried out by :mod:`concordia.runtime.fanout`, child sagas by
:mod:`concordia.runtime.children`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import ActionStep, SagaStep
from concordia.errors import ExpressionError, ValueLimitError
from concordia.runtime.children import Children
from concordia.runtime.decision import Decision
from concordia.runtime.effects import Flow
from concordia.runtime.emitter import evaluate, run_fields
from concordia.runtime.fanout import FanOut
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.pending import journal_value
from concordia.status import Kind, StepStatus

if TYPE_CHECKING:
    from concordia.runtime.executor import Executor, RunPass


class Constructs:
    """The language's operations over one executor (see the module docstring)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.fan_out = FanOut(executor)
        self.children = Children(executor)

    def carry_out(self, p: RunPass, decision: Decision, now: float
                  ) -> Flow[HandlerStopError | None]:
        kind = decision.kind
        if kind == "items":
            return (yield from self.fan_out.start_items(p, decision.steps, now))
        if kind == "undo_item":
            return (yield from self.fan_out.undo_item(p, decision.steps[0], now))
        if kind == "check":
            for name in decision.steps:
                self.check(p, name, now)
        elif kind == "catch":
            self.catch(p, decision.steps[0], now)
        elif kind == "expand":
            for name in decision.steps:
                self.fan_out.expand(p, name, now)
        elif kind == "settle":
            self.fan_out.settle(p, decision, now)
        elif kind == "child":
            for name in decision.steps:
                yield from self.children.advance(p, name, now)
        elif kind == "undo_child":
            yield from self.children.undo(p, decision.steps[0], now)
        else:  # pragma: no cover - the planner makes no other kind
            raise AssertionError(f"not a construct decision: {kind}")
        return None

    def abandon_items(self, p: RunPass, name: str) -> None:
        self.fan_out.abandon_items(p, name)

    # -- conditions ----------------------------------------------------------------------

    def check(self, p: RunPass, name: str, now: float) -> None:
        step = p.compiled.steps[name]
        rec = p.steps[name]
        source = step.if_
        assert source is not None
        try:
            holds = evaluate(source, p.run, p.results)
            if not isinstance(holds, bool):
                raise ExpressionError(source, f"gives {type(holds).__name__}, not a boolean: "
                                              "a condition must be true or false")
        except ExpressionError as exc:
            self.executor._fail(p, step, rec, exc, now, retry=False)
            return
        p.pending.touch(rec)
        if holds:
            rec.status = StepStatus.READY
            p.pending.note(now, Kind.STEP_READY, name, condition=source)
            return
        rec.status = StepStatus.SKIPPED
        rec.finished_at = now
        p.pending.note(now, Kind.STEP_SKIPPED, name, condition=source)

    # -- catch ---------------------------------------------------------------------------

    def catch(self, p: RunPass, name: str, now: float) -> None:
        step = p.compiled.steps[name]
        rec = p.steps[name]
        assert isinstance(step, ActionStep | SagaStep)
        assert rec.caught is not None
        clause = step.catch[rec.caught]
        error: dict[str, Any] = dict(rec.error_detail or {"message": rec.error})
        scope = {"input": p.run.input, "results": p.results, "run": run_fields(p.run),
                 "error": error}
        try:
            mapped = {key: compile_expression(source).evaluate(scope)
                      for key, source in clause.result.items()}
            result = journal_value({**mapped, "error": error}, f"the result of step {name}")
        except (ExpressionError, ValueLimitError) as exc:
            rec.caught = None
            rec.error = f"{rec.error}; its catch result failed: {exc}"
            p.run.error = f"step {name}: {rec.error}"
            p.pending.touch(rec)
            return
        rec.status = StepStatus.CAUGHT
        rec.result = result
        p.results[name] = result
        p.pending.touch(rec)
        p.pending.note(now, Kind.STEP_CAUGHT, name, rec.attempt, entry=rec.caught,
                       goto=clause.goto, type=error.get("type"))
