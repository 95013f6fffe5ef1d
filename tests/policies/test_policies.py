"""Policy evaluation: decisions with filled reasons, rule order, and errors that never approve."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from concordia.definitions import Catalog, Policy
from concordia.errors import PolicyError
from concordia.ids import is_uuid, uuid7_ms
from concordia.policies import DecisionRecord, evaluate_policy
from concordia.timestamps import parse_timestamp
from tests.conftest import POLICIES

GOOD = {"drift_score": 0.12, "shadow_validated": True, "adapter_count": 3}


@pytest.fixture(scope="module")
def upm() -> Policy:
    catalog = Catalog.load([POLICIES])
    assert catalog.errors == []
    return catalog.policy("upm_activation")


def _policy(rules: list[dict[str, Any]], *, default: str = "approve",
            inputs: dict[str, Any] | None = None) -> Policy:
    return Policy.model_validate({
        "name": "test_policy",
        "version": 3,
        "input_schema": inputs if inputs is not None else {
            "a": {"type": "integer", "required": True},
            "b": {"type": "integer", "required": True},
        },
        "rules": rules,
        "default": {"decision": default, "reason": "default for a={{ input.a }}"},
    })


def test_approve_by_default_with_filled_reason(upm: Policy) -> None:
    record = evaluate_policy(upm, GOOD)
    assert record.decision == "approve"
    assert record.approved
    assert record.rule is None
    assert record.reason == "drift 0.12 within threshold; shadow validated on 3 adapter(s)"
    assert (record.policy, record.policy_version) == ("upm_activation", 1)
    assert record.inputs == GOOD


def test_drift_above_threshold_is_rejected_naming_the_drift(upm: Policy) -> None:
    record = evaluate_policy(upm, {**GOOD, "drift_score": 0.42})
    assert record.decision == "reject"
    assert not record.approved
    assert record.rule == "drift_too_high"
    assert record.reason == "drift 0.42 exceeds the 0.3 threshold"


def test_threshold_itself_is_not_above_it(upm: Policy) -> None:
    assert evaluate_policy(upm, {**GOOD, "drift_score": 0.3}).approved


@pytest.mark.parametrize(("changes", "rule"), [
    ({"shadow_validated": False}, "shadow_not_validated"),
    ({"adapter_count": 0}, "no_adapters"),
    # Several rules match: the first in file order decides.
    ({"drift_score": 0.9, "shadow_validated": False, "adapter_count": 0}, "drift_too_high"),
    ({"shadow_validated": False, "adapter_count": 0}, "shadow_not_validated"),
])
def test_every_rule_rejects_and_the_first_match_wins(
        upm: Policy, changes: dict[str, Any], rule: str) -> None:
    record = evaluate_policy(upm, {**GOOD, **changes})
    assert (record.decision, record.rule) == ("reject", rule)


def test_first_match_wins_even_when_a_later_rule_approves() -> None:
    policy = _policy([
        {"name": "big_a", "when": "input.a > 10", "decision": "approve",
         "reason": "a={{ input.a }} is big"},
        {"name": "any_a", "when": "input.a > 0", "decision": "reject", "reason": "a>0"},
    ], default="reject")
    assert evaluate_policy(policy, {"a": 11, "b": 0}).rule == "big_a"
    assert evaluate_policy(policy, {"a": 11, "b": 0}).reason == "a=11 is big"
    assert evaluate_policy(policy, {"a": 1, "b": 0}).rule == "any_a"
    default = evaluate_policy(policy, {"a": 0, "b": 0})
    assert (default.rule, default.decision, default.reason) == (None, "reject",
                                                               "default for a=0")


@pytest.mark.parametrize("missing", ["drift_score", "shadow_validated", "adapter_count"])
def test_missing_input_is_an_error_naming_the_field(upm: Policy, missing: str) -> None:
    inputs = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(PolicyError, match=f"input '{missing}': required field is missing"):
        evaluate_policy(upm, inputs)


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"drift_score": "0.1"}, "input 'drift_score': '0.1' is not of type 'number'"),
    ({"shadow_validated": "yes"}, "input 'shadow_validated': 'yes' is not of type 'boolean'"),
    ({"adapter_count": 1.5}, "input 'adapter_count': 1.5 is not of type 'integer'"),
    ({"drift_score": -0.1}, "input 'drift_score': -0.1 is less than the minimum of 0"),
    ({"drift_scor": 0.1}, "input 'drift_scor': unknown field"),
])
def test_wrong_input_is_an_error_naming_the_field(
        upm: Policy, changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        evaluate_policy(upm, {**GOOD, **changes})
    assert fragment in str(info.value)
    assert info.value.policy == "upm_activation"


def test_nan_is_not_a_way_around_the_threshold(upm: Policy) -> None:
    # NaN > 0.3 is false; were it accepted, the default would approve.
    with pytest.raises(PolicyError, match="JSON"):
        evaluate_policy(upm, {**GOOD, "drift_score": float("nan")})


@pytest.mark.parametrize("inputs", [[1, 2], "x", None])
def test_inputs_must_be_an_object(upm: Policy, inputs: Any) -> None:
    with pytest.raises(PolicyError, match="must be an object"):
        evaluate_policy(upm, inputs)


@pytest.mark.parametrize(("when", "fragment"), [
    ("input.a / input.b > 1", "rule 'divides' cannot be evaluated"),
    ("input.missing > 1", "rule 'divides' cannot be evaluated"),
    ("input.a + 'x' == 'y'", "rule 'divides' cannot be evaluated"),
])
def test_expression_errors_are_errors_never_approvals(when: str, fragment: str) -> None:
    # The default would approve: an evaluation error must not fall through to it.
    policy = _policy([{"name": "divides", "when": when, "decision": "reject",
                       "reason": "r"}], default="approve")
    with pytest.raises(PolicyError, match=fragment) as info:
        evaluate_policy(policy, {"a": 4, "b": 0})
    assert info.value.policy == "test_policy"


def test_a_later_rule_error_is_not_skipped() -> None:
    policy = _policy([
        {"name": "fine", "when": "input.a > 100", "decision": "reject", "reason": "r"},
        {"name": "broken", "when": "input.a / input.b > 1", "decision": "reject",
         "reason": "r"},
    ])
    with pytest.raises(PolicyError, match="rule 'broken'"):
        evaluate_policy(policy, {"a": 4, "b": 0})
    # When an earlier rule matches, later (broken) rules are never reached.
    assert evaluate_policy(policy, {"a": 101, "b": 0}).rule == "fine"


@pytest.mark.parametrize("when", ["input.a", "'yes'", "input.a > 1 ? 1 : 0"])
def test_a_condition_must_be_boolean(when: str) -> None:
    policy = _policy([{"name": "not_bool", "when": when, "decision": "reject",
                       "reason": "r"}])
    with pytest.raises(PolicyError, match=r"rule 'not_bool': condition .* not a boolean"):
        evaluate_policy(policy, {"a": 4, "b": 2})


def test_a_reason_that_cannot_be_filled_is_an_error() -> None:
    policy = _policy([{"name": "bad_reason", "when": "input.a > 1", "decision": "reject",
                       "reason": "ratio {{ input.a / input.b }}"}])
    with pytest.raises(PolicyError, match="reason of rule 'bad_reason' cannot be filled"):
        evaluate_policy(policy, {"a": 4, "b": 0})
    assert evaluate_policy(policy, {"a": 4, "b": 2}).reason == "ratio 2"


def test_integers_count_as_numbers_in_conditions() -> None:
    # JSON Schema accepts 1 for `number`; CEL does not mix int and double arithmetic.
    policy = _policy([{"name": "scaled", "when": "input.x * 2.0 > 1.0", "decision": "reject",
                       "reason": "x={{ input.x }}"}],
                     inputs={"x": {"type": "number", "required": True}})
    record = evaluate_policy(policy, {"x": 1})
    assert record.rule == "scaled"
    assert record.inputs == {"x": 1}  # the record keeps the input as given


def test_record_is_json_ready_and_round_trips(upm: Policy) -> None:
    moment = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    record = evaluate_policy(upm, {**GOOD, "drift_score": 0.5}, now=moment)
    data = json.loads(json.dumps(record.to_dict()))
    assert set(data) == {"decision_id", "policy", "policy_version", "rule", "decision",
                         "reason", "inputs", "decided_at"}
    assert is_uuid(data["decision_id"])
    assert uuid7_ms(data["decision_id"]) > 0
    assert data["decided_at"] == "2026-11-27T09:30:00.000000Z"
    assert parse_timestamp(data["decided_at"]) == moment
    assert DecisionRecord.from_dict(data) == record


def test_record_does_not_change_with_the_callers_dict(upm: Policy) -> None:
    inputs = dict(GOOD)
    record = evaluate_policy(upm, inputs)
    inputs["drift_score"] = 0.99
    assert record.inputs["drift_score"] == 0.12
    with pytest.raises(AttributeError):
        record.decision = "reject"  # type: ignore[misc]


def test_each_decision_gets_its_own_id(upm: Policy) -> None:
    ids = [evaluate_policy(upm, GOOD).decision_id for _ in range(50)]
    assert len(set(ids)) == 50
    assert evaluate_policy(upm, GOOD, decision_id="fixed").decision_id == "fixed"
