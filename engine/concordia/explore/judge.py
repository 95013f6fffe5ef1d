"""The explorer's judge: answers what a run would learn from data, from the path instead.

The engine asks its :class:`~concordia.runtime.judge.Judge` for every judgement the
definitions leave to data. The explorer's answers: a condition is true or false and a
fan-out's list has 0, 1 or k items (branches the oracle picks), a policy approves or
rejects (a fault when it rejects), an event's payload and a child's input are the
smallest values their schemas accept, and an await's match holds for the event the
world delivers to it (:class:`PathMatch`, in place of the book's compiled match).

Each expression is also checked before it is answered (property 5): every
``results.<step>`` it reads must exist on this path — the step succeeded, or was caught
and the field is in its catch result — unless the expression tests it with ``has()``.
A read that does not is recorded as a violation, and raises the
:class:`~concordia.errors.ExpressionError` the engine would meet evaluating it, so the
path goes on as the run would. An event that is not in the taxonomy is recorded too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.construct_checks import guarded
from concordia.definitions.expressions import blank_strings, result_references
from concordia.definitions.models import (
    ActionStep,
    AwaitStep,
    Emit,
    Policy,
    Saga,
    SagaStep,
)
from concordia.errors import ExpressionError
from concordia.explore.model import Act, Option, Point, PointKind, Property, Violation
from concordia.explore.samples import sample
from concordia.ids import new_id
from concordia.policies import DecisionRecord
from concordia.runtime.matching import MatchSpec
from concordia.store.records import RunRecord

Choose = Callable[[Point, list[Option]], Option]


class PathJudge:
    """Answers a run's judgements from the path (see the module docstring)."""

    def __init__(self, catalog: Catalog, saga: Saga, root: str, items: int,
                 choose: Choose) -> None:
        self.catalog = catalog
        self.saga = saga
        self.root = root
        self.choose = choose
        self.violations: list[Violation] = []
        self.delivering: tuple[str, str] | None = None  # (run id, await step) the world serves
        self._item_options = item_options(items)
        # Which step emits each event (None: the saga's on_complete or on_failure), by
        # value: the engine's compiled saga may hold an equal copy of the definition.
        self._emitter: dict[tuple[Any, ...], str] = {
            _emit_key(e): s.name for s in saga.steps
            for e in (*s.emit, *getattr(s, "emit_on_compensate", ()))}

    # -- the Judge protocol (concordia.runtime.judge) ------------------------------------

    def condition(self, step: str, source: str, run: RunRecord,
                  results: Mapping[str, Any]) -> Any:
        if run.id != self.root:
            return True
        self.check_reads(step, source, results)
        return self.choose(condition_point(step), list(CONDITION_OPTIONS)).act == Act.TRUE

    def items(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any:
        if run.id != self.root:
            return []
        self.check_reads(step, source, results)
        option = self.choose(items_point(step), list(self._item_options))
        return [f"{step}-item-{i}" for i in range(option.count)]

    def value(self, step: str, source: str, run: RunRecord,
              results: Mapping[str, Any]) -> Any:
        if run.id == self.root:
            self.check_reads(step, source, results)
        definition = self.saga.step(step) if run.id == self.root else None
        if isinstance(definition, SagaStep) and definition.input:
            child = self.catalog.saga(definition.saga, definition.version)
            for key, mapped in definition.input.items():
                if mapped == source:
                    prop = child.input_schema.get("properties", {}).get(key, {})
                    return sample(prop)
        return None

    def caught(self, step: str, source: str, scope: Mapping[str, Any]) -> Any:
        run = scope.get("run") or {}
        if run.get("id") == self.root:
            self.check_reads(step, source, scope.get("results") or {})
        return None

    def payload(self, emit: Emit, run: RunRecord,
                results: Mapping[str, Any]) -> dict[str, Any]:
        ours = run.id == self.root
        if ours:
            for source in emit.payload.values():
                self.check_reads(self._emitter.get(_emit_key(emit)), source, results)
        if not self.catalog.has_event(emit.event, emit.version):
            if ours:
                self.violations.append(Violation(
                    Property.REFERENCES, f"event {emit.event}",
                    f"emits {emit.event}, which is not in the taxonomy",
                    "add the event to the taxonomy (definitions/events/) or fix its name"))
            return {}
        schema = self.catalog.event(emit.event, emit.version).payload_schema
        value = sample(schema)
        return value if isinstance(value, dict) else {}

    def policy(self, step: str, policy: Policy, inputs: Mapping[str, Any],
               now: datetime) -> DecisionRecord:
        option = self.choose(policy_point(step), list(POLICY_OPTIONS))
        return decided(policy, option, inputs, now)

    # -- the match of an await -----------------------------------------------------------

    def matches(self, step: str, source: str | None, scope: Mapping[str, Any]) -> bool:
        """Whether the event in ``scope`` resumes await ``step``: it is the one the world
        delivers to this run's step, or to another of its awaits of the same event with the
        same match (any event that resumes one resumes both)."""
        run = scope.get("run") or {}
        if self.delivering is None or run.get("id") != self.delivering[0]:
            return False
        if step != self.delivering[1] and _awaits(self.saga, step) != _awaits(
                self.saga, self.delivering[1]):
            return False
        if source is not None and run.get("id") == self.root:
            self.check_reads(step, source, scope.get("results") or {})
        return True

    # -- property 5: reads of results that exist -------------------------------------------

    def check_reads(self, step: str | None, source: str, results: Mapping[str, Any]) -> None:
        """Record and raise (as evaluating would) a read of a result this path lacks."""
        missing = missing_reads(self.saga, source, results)
        if not missing:
            return
        where = f"step {step}" if step else "the saga"
        self.violations.append(Violation(
            Property.REFERENCES, f"{where} reads {', '.join(missing)}",
            f"{where} evaluates `{source}`, which reads {', '.join(missing)}: missing on "
            "this path", f"guard the read with has({missing[0]}), or make sure the step "
            "has a result on every path to it", step))
        raise ExpressionError(source, f"no such key: {missing[0]}")


# The branches and decisions the judge leaves to the path (shared with the check of a
# path on the real engine, :func:`concordia.testing.explore`, which steers the same).
CONDITION_OPTIONS = (Option(Act.TRUE, "true"), Option(Act.FALSE, "false"))
POLICY_OPTIONS = (Option(Act.APPROVE, "approves"), Option(Act.REJECT, "rejects", fault=True))


def condition_point(step: str) -> Point:
    return Point(PointKind.CONDITION, step, f"if {step}")


def items_point(step: str) -> Point:
    return Point(PointKind.ITEMS, step, f"items {step}")


def policy_point(step: str) -> Point:
    return Point(PointKind.POLICY, step, f"policy {step}")


def item_options(k: int) -> list[Option]:
    """A list of k items, of one, of none (the happy path has k)."""
    return [Option(Act.ITEMS, f"{n} item{'s' if n != 1 else ''}", count=n)
            for n in dict.fromkeys((k, 1, 0))]


def decided(policy: Policy, option: Option, inputs: Mapping[str, Any],
            now: datetime) -> DecisionRecord:
    """The decision record of a policy decided by the path (``option``)."""
    approved = option.act == Act.APPROVE
    return DecisionRecord(decision_id=new_id(), policy=policy.name,
                          policy_version=policy.version, rule=None,
                          decision="approve" if approved else "reject",
                          reason=f"explored: the policy {option.label}",
                          inputs=dict(inputs), decided_at=now.isoformat())


def _awaits(saga: Saga, name: str) -> tuple[str, str | None] | None:
    step = saga.step(name)
    return (step.event, step.match) if isinstance(step, AwaitStep) else None


def _emit_key(emit: Emit) -> tuple[Any, ...]:
    return (emit.event, emit.version, tuple(sorted(emit.payload.items())))


def missing_reads(saga: Saga, source: str, results: Mapping[str, Any]) -> list[str]:
    """The reads of ``results.<step>`` (and of fields of a caught step's result) in
    ``source`` that ``results`` cannot answer and ``has()`` does not guard."""
    missing: list[str] = []
    blanked: str | None = None
    for ref in dict.fromkeys(result_references(source)):
        if guarded(source, ref):
            continue
        if ref not in results:
            missing.append(f"results.{ref}")
            continue
        value = results[ref]
        if not _caught(saga, ref, value):
            continue
        blanked = blanked if blanked is not None else blank_strings(source)
        for field in dict.fromkeys(re.findall(
                rf"(?<![\w.])results\s*\.\s*{re.escape(ref)}\s*\.\s*([A-Za-z_]\w*)", blanked)):
            if field not in value and not _field_guarded(source, ref, field):
                missing.append(f"results.{ref}.{field}")
    return missing


def _caught(saga: Saga, name: str, value: Any) -> bool:
    """Whether ``value`` is the result of a caught step (its catch result, with ``error``)."""
    try:
        step = saga.step(name)
    except KeyError:
        return False
    return (isinstance(step, ActionStep | SagaStep) and bool(step.catch)
            and isinstance(value, dict) and "error" in value)


def _field_guarded(source: str, ref: str, field: str) -> bool:
    pattern = rf"has\(\s*results\s*\.\s*{re.escape(ref)}\s*\.\s*{re.escape(field)}\s*\)"
    return re.search(pattern, source) is not None


class PathMatch(MatchSpec):
    """An await's match, answered by the judge: the event the world delivers to a run's
    await matches it, and nothing else does (index keys are one constant, so delivery
    finds the await whatever the event's data)."""

    _KEY = "explored"

    def __init__(self, spec: MatchSpec, judge_of: Callable[[], PathJudge], step: str) -> None:
        super().__init__(spec.full, spec.event_side, spec.run_side)
        object.__setattr__(self, "judge_of", judge_of)
        object.__setattr__(self, "step", step)

    def run_key(self, run_scope: dict[str, Any]) -> str | None:
        return self._KEY

    def event_key(self, event_scope: dict[str, Any]) -> str | None:
        return self._KEY

    def matches(self, scope: dict[str, Any]) -> bool:
        judge: PathJudge = self.__dict__["judge_of"]()
        source = self.full.source if self.full is not None else None
        return judge.matches(self.__dict__["step"], source, scope)
