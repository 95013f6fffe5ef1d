"""Policy evaluation: inputs checked, ordered CEL rules (first match wins), a decision record.

Nothing here approves by accident. Inputs that do not fit the policy's ``input_schema``,
a rule whose condition fails to evaluate or yields something other than a boolean, and
a reason template that cannot be filled all raise :class:`~concordia.errors.PolicyError`;
only a rule that matched, or the default when every rule evaluated to false, decides.
Pure: no I/O; saving the record is the caller's business (the run's transaction).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from concordia.definitions.expressions import compile_expression, render_template
from concordia.definitions.models import Decision, Policy
from concordia.errors import ExpressionError, PolicyError
from concordia.ids import new_id
from concordia.jsonvalidation import FieldError, SchemaError, check, summarise
from concordia.timestamps import format_timestamp, utc_now


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What a policy decided, why, on which inputs and when: journaled with the run."""

    decision_id: str
    policy: str
    policy_version: int
    rule: str | None  # None: no rule matched and the policy's default decided
    decision: Decision
    reason: str
    inputs: Mapping[str, Any]
    decided_at: str  # RFC 3339, UTC

    def __hash__(self) -> int:
        # The generated hash would fail on the inputs dict; the id identifies a decision.
        return hash(self.decision_id)

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "policy": self.policy,
            "policy_version": self.policy_version,
            "rule": self.rule,
            "decision": self.decision,
            "reason": self.reason,
            "inputs": copy.deepcopy(dict(self.inputs)),
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DecisionRecord:
        """Rebuild a record read back from a journal."""
        decision = raw["decision"]
        if decision not in ("approve", "reject"):
            raise ValueError(f"decision must be 'approve' or 'reject', not {decision!r}")
        return cls(
            decision_id=str(raw["decision_id"]),
            policy=str(raw["policy"]),
            policy_version=int(raw["policy_version"]),
            rule=None if raw.get("rule") is None else str(raw["rule"]),
            decision=decision,
            reason=str(raw["reason"]),
            inputs=copy.deepcopy(dict(raw["inputs"])),
            decided_at=str(raw["decided_at"]),
        )


def evaluate_policy(policy: Policy, inputs: Mapping[str, Any], *,
                    now: datetime | None = None,
                    decision_id: str | None = None) -> DecisionRecord:
    """Decide on ``inputs``; raise :class:`PolicyError` when no sound decision is possible.

    ``now`` and ``decision_id`` let a caller that replays a journal reproduce a record.
    """
    if not isinstance(inputs, Mapping):
        raise PolicyError(policy.name, f"inputs must be an object, not {type(inputs).__name__}")
    # A private deep copy: the record must not change if the caller mutates its dict, and
    # it must hold JSON data only (the record is journaled and printed).
    frozen_inputs = _json_copy(policy.name, inputs)
    _check_inputs(policy, frozen_inputs)
    context = {"input": _coerce_numbers(frozen_inputs, policy.input_schema)}
    rule_name: str | None = None
    decision: Decision = policy.default.decision
    template = policy.default.reason
    for rule in policy.rules:
        if _matches(policy, rule.name, rule.when, context):
            rule_name, decision, template = rule.name, rule.decision, rule.reason
            break
    where = f"rule {rule_name!r}" if rule_name else "the default"
    try:
        reason = render_template(template, context)
    except ExpressionError as exc:
        raise PolicyError(policy.name, f"reason of {where} cannot be filled: {exc}") from None
    except Exception as exc:  # see _matches: the evaluator may raise other errors
        raise PolicyError(policy.name,
                          f"reason of {where} cannot be filled: {_describe(exc)}") from None
    return DecisionRecord(
        decision_id=decision_id or new_id(),
        policy=policy.name,
        policy_version=policy.version,
        rule=rule_name,
        decision=decision,
        reason=reason,
        inputs=frozen_inputs,
        decided_at=format_timestamp(now or utc_now()),
    )


def _matches(policy: Policy, rule: str, when: str, context: Mapping[str, Any]) -> bool:
    try:
        # compile_expression caches by source, so each condition is compiled once.
        result = compile_expression(when).evaluate(context)
    except ExpressionError as exc:
        raise PolicyError(policy.name, f"rule {rule!r} cannot be evaluated: {exc}") from None
    except Exception as exc:
        # The CEL binding raises plain Python errors for some runtime faults (division by
        # zero, overflow) that ExpressionError does not wrap. Whatever it is, it must stop
        # the decision rather than let the next rule or the default approve.
        raise PolicyError(policy.name, f"rule {rule!r} cannot be evaluated: "
                                       f"expression {when!r}: {_describe(exc)}") from None
    if not isinstance(result, bool):
        raise PolicyError(policy.name, f"rule {rule!r}: condition {when!r} gave "
                                       f"{result!r} ({type(result).__name__}), not a boolean")
    return result


def input_errors(policy: Policy, inputs: Mapping[str, Any]) -> list[FieldError]:
    """Every way ``inputs`` break the policy's ``input_schema``, each field once."""
    try:
        # jsonschema names every missing required field in each of its `required` errors.
        return list(dict.fromkeys(check(policy.input_schema, inputs)))
    except SchemaError as exc:
        raise PolicyError(policy.name, f"input_schema is not valid: {exc.message}") from None


def _check_inputs(policy: Policy, inputs: dict[str, Any]) -> None:
    errors = input_errors(policy, inputs)
    if errors:
        first = errors[0].field
        raise PolicyError(policy.name, f"invalid input: {summarise(errors, 'input')}"
                          + (f" (first: {first!r})" if first and len(errors) > 1 else ""))


def _json_copy(policy: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    try:
        # allow_nan=False: NaN compares false with everything, so `drift > 0.3` would let
        # a NaN drift through to the default decision.
        copied: dict[str, Any] = json.loads(json.dumps(dict(inputs), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PolicyError(policy, f"inputs must be JSON data: {exc}") from None
    return copied


def _coerce_numbers(value: Any, schema: Mapping[str, Any]) -> Any:
    """Integers where the schema says ``number`` become floats for CEL.

    JSON Schema counts 1 as a number, but CEL does not mix int and double in arithmetic
    (``input.drift * 2.0`` fails on an int), so a valid input must not become an error.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        return float(value) if "number" in kinds and "integer" not in kinds else value
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        return {k: _coerce_numbers(v, props.get(k, {})) if isinstance(props.get(k), Mapping)
                else v for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [_coerce_numbers(v, items) for v in value]
    return value


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["DecisionRecord", "evaluate_policy", "input_errors"]
