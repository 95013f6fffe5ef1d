"""Where a run meets a judgement the definitions leave to data: a condition, a fan-out's
list, a mapped value, a catch entry's result, an event's payload, a policy's decision.

The engine evaluates them (:class:`Evaluating`: CEL over the run's input and results,
the policy's rules). The failure-path explorer (:mod:`concordia.explore`) puts a judge of
its own in its place, which answers each from the path it is exploring, so that every
other part of a run — what the planner decides, what each decision writes — is the
engine's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import Emit, Policy
from concordia.policies import DecisionRecord, evaluate_policy
from concordia.runtime.emitter import evaluate
from concordia.store.records import RunRecord


class Judge(Protocol):
    """The judgements a run asks for (each may raise what evaluating it raises:
    ExpressionError, PolicyError, ...)."""

    def condition(self, step: str, source: str, run: RunRecord,
                  results: Mapping[str, Any]) -> Any: ...

    def items(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any: ...

    def value(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any: ...

    def caught(self, step: str, source: str, scope: Mapping[str, Any]) -> Any: ...

    def payload(self, emit: Emit, run: RunRecord,
                results: Mapping[str, Any]) -> dict[str, Any]: ...

    def policy(self, step: str, policy: Policy, inputs: Mapping[str, Any],
               now: datetime) -> DecisionRecord: ...


class Evaluating:
    """The engine's judge: evaluates what the definitions say."""

    def condition(self, step: str, source: str, run: RunRecord,
                  results: Mapping[str, Any]) -> Any:
        return evaluate(source, run, results)

    def items(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any:
        return evaluate(source, run, results)

    def value(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any:
        return evaluate(source, run, results)

    def caught(self, step: str, source: str, scope: Mapping[str, Any]) -> Any:
        return compile_expression(source).evaluate(dict(scope))

    def payload(self, emit: Emit, run: RunRecord,
                results: Mapping[str, Any]) -> dict[str, Any]:
        return {k: evaluate(v, run, results) for k, v in emit.payload.items()}

    def policy(self, step: str, policy: Policy, inputs: Mapping[str, Any],
               now: datetime) -> DecisionRecord:
        return evaluate_policy(policy, inputs, now=now)
