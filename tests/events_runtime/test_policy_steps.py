"""Policies in runs: decisions with reasons, journaled with the run; a rejection, an
expression error or a missing input fails the step and compensates, never approves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from concordia import Catalog, Engine, Registry
from concordia.ids import is_uuid
from concordia.timestamps import parse_timestamp
from tests.events_runtime.conftest import Calls, load, make_engine, store_url, write_tree

FILES = {
    "activation.yaml": """
        name: activation
        version: 2
        input_schema:
          drift_score: {type: number, required: true, minimum: 0}
          shadow_validated: {type: boolean, required: true}
        rules:
          - name: drift_too_high
            when: input.drift_score > 0.3
            decision: reject
            reason: "drift {{ input.drift_score }} exceeds the 0.3 threshold"
          - name: not_validated
            when: "!input.shadow_validated"
            decision: reject
            reason: "snapshot has not passed shadow validation"
        default:
          decision: approve
          reason: "drift {{ input.drift_score }} within threshold"
    """,
    # Its first rule divides by an input that may be zero, its second reads an optional
    # input that may be absent: both are errors when they happen, not a pass.
    "fragile.yaml": """
        name: fragile
        version: 1
        input_schema:
          errors: {type: integer, required: true}
          samples: {type: integer, required: true}
          note: {type: string}
        rules:
          - name: error_rate
            when: input.errors / input.samples > 0
            decision: reject
            reason: "{{ input.errors }} errors in {{ input.samples }} samples"
          - name: flagged
            when: input.note == "hold"
            decision: reject
            reason: "held by note"
        default:
          decision: approve
          reason: "clean"
    """,
    "activate.yaml": """
        name: activate
        version: 1
        input_schema:
          snapshot: {type: string, required: true}
        steps:
          - name: load
            action: snap.load
            compensate: snap.unload
          - name: gate
            policy: activation
            input:
              drift_score: results.load.drift_score
              shadow_validated: results.load.shadow_validated
          - name: promote
            action: snap.promote
            compensate: snap.demote
    """,
    "checked.yaml": """
        name: checked
        version: 1
        input_schema:
          snapshot: {type: string, required: true}
        steps:
          - name: load
            action: snap.load
            compensate: snap.unload
          - name: gate
            policy: fragile
            input:
              errors: results.load.errors
              samples: results.load.samples
          - name: promote
            action: snap.promote
            compensate: snap.demote
    """,
}


def _registry(calls: Calls, loaded: dict[str, Any]) -> Registry:
    registry = Registry()

    @registry.action("snap.load")
    def load_snapshot(ctx: Any) -> dict[str, Any]:
        calls.add("load", ctx)
        return loaded

    @registry.compensation("snap.unload")
    def unload(ctx: Any) -> None:
        calls.add("unload", ctx)

    @registry.action("snap.promote")
    def promote(ctx: Any) -> dict[str, Any]:
        calls.add("promote", ctx, results=ctx.results)
        return {"active": ctx.input["snapshot"]}

    @registry.compensation("snap.demote")
    def demote(ctx: Any) -> None:
        calls.add("demote", ctx)

    return registry


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls,
            loaded: dict[str, Any]) -> Engine:
    catalog = load(write_tree(tmp_path / "defs", FILES))
    return make_engine(engines, catalog, _registry(calls, loaded),
                       store_url(store_kind, tmp_path))


def _run(engine: Engine, saga: str = "activate") -> str:
    run = engine.start(saga, {"snapshot": "s-1"})
    engine.run_until_idle()
    return run.id


def _decided_at(engine: Engine) -> datetime:
    return datetime.fromtimestamp(engine.clock.now(), UTC)


def test_approval_is_recorded_and_the_run_goes_on(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    loaded = {"drift_score": 0.1, "shadow_validated": True}
    engine = _engine(engines, tmp_path, store_kind, calls, loaded)
    run_id = _run(engine)
    view = engine.get_run(run_id)
    assert view.status == "completed"
    [decision] = view.decisions
    assert is_uuid(decision["decision_id"])
    assert decision == {
        "decision_id": decision["decision_id"], "policy": "activation", "policy_version": 2,
        "rule": None, "decision": "approve", "reason": "drift 0.1 within threshold",
        "inputs": loaded, "decided_at": decision["decided_at"], "run_id": run_id,
        "step": "gate"}
    assert parse_timestamp(decision["decided_at"]) == _decided_at(engine)
    decided = [h for h in view.history if h.kind == "policy.decided"]
    assert [(h.step, h.detail["decision"], h.detail["decision_id"]) for h in decided] == [
        ("gate", "approve", decision["decision_id"])]
    # The next step sees the decision as the policy step's result.
    [promote] = calls.of("promote")
    assert promote["results"]["gate"]["decision"] == "approve"
    assert calls.names() == ["load", "promote"]


@pytest.mark.parametrize(("loaded", "rule", "reason"), [
    pytest.param({"drift_score": 0.42, "shadow_validated": True}, "drift_too_high",
                 "drift 0.42 exceeds the 0.3 threshold", id="drift"),
    pytest.param({"drift_score": 0.2, "shadow_validated": False}, "not_validated",
                 "snapshot has not passed shadow validation", id="not-validated"),
])
def test_rejection_fails_the_run_with_the_reason_and_compensates(
        engines: list[Engine], tmp_path: Path, store_kind: str, loaded: dict[str, Any],
        rule: str, reason: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, loaded)
    run_id = _run(engine)
    view = engine.get_run(run_id)
    assert view.status == "compensated"
    assert view.error == f"step gate: PolicyError: policy 'activation': rejected: {reason}"
    assert view.step("gate").status == "failed"
    [decision] = view.decisions
    assert (decision["decision"], decision["rule"], decision["reason"]) == (
        "reject", rule, reason)
    assert decision["inputs"] == loaded
    assert view.compensated_steps() == ["load"]
    assert calls.names() == ["load", "unload"]
    assert calls.of("unload")[0]["result"] == loaded


def test_decisions_are_in_the_store(engines: list[Engine], tmp_path: Path) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, "sqlite", calls,
                     {"drift_score": 0.5, "shadow_validated": True})
    run_id = _run(engine)
    before = engine.get_run(run_id).decisions
    engine.close()
    engines.remove(engine)
    reopened = _engine(engines, tmp_path, "sqlite", calls, {})
    assert reopened.store.decisions(run_id) == before
    [decision] = reopened.get_run(run_id).decisions
    assert (decision["policy"], decision["decision"], decision["rule"]) == (
        "activation", "reject", "drift_too_high")


@pytest.mark.parametrize(("saga", "loaded", "message"), [
    pytest.param("checked", {"errors": 1, "samples": 0},
                 "policy 'fragile': rule 'error_rate' cannot be evaluated: expression "
                 "'input.errors / input.samples > 0': division by zero", id="division"),
    pytest.param("checked", {"errors": 0, "samples": 10},
                 "policy 'fragile': rule 'flagged' cannot be evaluated: expression "
                 "'input.note == \"hold\"': no such field 'note'", id="absent-optional"),
    pytest.param("activate", {"drift_score": 0.1},
                 "ExpressionError: expression 'results.load.shadow_validated': no such field "
                 "'shadow_validated'", id="input-not-in-result"),
    pytest.param("activate", {"drift_score": 0.1, "shadow_validated": None},
                 "policy 'activation': invalid input: input 'shadow_validated': None is not "
                 "of type 'boolean'", id="input-null"),
    pytest.param("activate", {"drift_score": -1.0, "shadow_validated": True},
                 "policy 'activation': invalid input: input 'drift_score': -1.0 is less than "
                 "the minimum of 0", id="input-out-of-range"),
    pytest.param("activate", {"drift_score": "low", "shadow_validated": True},
                 "policy 'activation': invalid input: input 'drift_score': 'low' is not of "
                 "type 'number'", id="input-wrong-type"),
])
def test_policy_errors_fail_the_step_and_never_approve(
        engines: list[Engine], tmp_path: Path, store_kind: str, saga: str,
        loaded: dict[str, Any], message: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, loaded)
    run_id = _run(engine, saga)
    view = engine.get_run(run_id)
    assert view.status == "compensated"
    assert view.error is not None
    assert view.error.startswith("step gate: ")
    assert message in view.error
    assert view.step("gate").status == "failed"
    assert view.decisions == []  # no decision was made, so none is recorded
    assert not any(h.kind == "policy.decided" for h in view.history)
    assert calls.names() == ["load", "unload"]
    assert calls.of("promote") == []


def test_policy_that_cannot_reject_is_flagged_by_validation(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "defs", {"lenient.yaml": """
        name: lenient
        version: 1
        input_schema:
          drift_score: {type: number, required: true}
        rules:
          - name: low_drift
            when: input.drift_score < 0.1
            decision: approve
            reason: "low drift"
        default:
          decision: approve
          reason: "approved"
    """})
    catalog = Catalog.load([str(root)])
    assert [(p.code, p.severity) for p in catalog.problems] == [
        ("policy-never-rejects", "error")]
