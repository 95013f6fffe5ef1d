"""Emission: every emitted event is checked against the taxonomy at emit time.

An unknown type or an invalid payload fails the step with an error naming the field;
nothing is published (neither that event nor the step's other events), and the handler's
effect, kept as the step's checkpoint, is compensated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from concordia import Engine, Registry
from tests.events_runtime.conftest import Calls, load, make_engine, store_url, write_tree

ACCOUNT = "0190a8f4-3c2e-7cc1-9b51-6f2f0d7c1a11"

TAXONOMY = """
events:
  - name: crm.account.created
    version: 1
    reliability: persistent
    payload_schema:
      account_id: {type: uuid, required: true}
      seats: {type: integer, required: true}
      owner:
        type: map
        required: true
        fields:
          email: {type: email, required: true}
          name: {type: string}
  - name: crm.account.noted
    version: 1
    reliability: transient
    payload_schema:
      account_id: {type: uuid, required: true}
  - name: crm.account.closed
    version: 1
    reliability: persistent
    payload_schema:
      account_id: {type: uuid, required: true}
"""

SAGA = """
name: provision
version: 1
input_schema:
  seats: {type: integer, required: true}
steps:
  - name: open_account
    action: acct.open
    compensate: acct.close
    emit:
      - event: crm.account.noted
        payload: {account_id: results.open_account.account_id}
      - event: crm.account.created
        payload:
          account_id: results.open_account.account_id
          seats: results.open_account.seats
          owner: results.open_account.owner
  - name: finish
    action: acct.finish
    compensate: none
    reason: reads only
"""

# Valid statically; the mapped values only turn out wrong at run time.
ENDINGS = """
name: endings
version: 1
steps:
  - name: open_account
    action: acct.open
    compensate: acct.close
    emit_on_compensate:
      - event: crm.account.closed
        payload: {account_id: results.open_account.owner.email}
  - name: finish
    action: acct.finish
    compensate: none
    reason: reads only
on_complete:
  - event: crm.account.noted
    payload: {account_id: results.open_account.owner.name}
"""

# Sagas the static check refuses; loaded leniently to prove the emit-time check is the
# backstop (a catalog built by hand, or a taxonomy changed under a deployed saga).
LENIENT = {
    "unknown_type.yaml": """
        name: unknown_type
        version: 1
        steps:
          - name: open_account
            action: acct.open
            compensate: acct.close
            emit:
              - event: crm.account.opened
                payload: {account_id: results.open_account.account_id}
    """,
    "missing_field.yaml": """
        name: missing_field
        version: 1
        steps:
          - name: open_account
            action: acct.open
            compensate: acct.close
            emit:
              - event: crm.account.created
                payload:
                  account_id: results.open_account.account_id
                  owner: results.open_account.owner
    """,
    "extra_field.yaml": """
        name: extra_field
        version: 1
        steps:
          - name: open_account
            action: acct.open
            compensate: acct.close
            emit:
              - event: crm.account.noted
                payload:
                  account_id: results.open_account.account_id
                  region: "'eu-west'"
    """,
}

GOOD_RESULT: dict[str, Any] = {"account_id": ACCOUNT, "seats": 3,
                               "owner": {"email": "ada@example.com", "name": "Ada"}}


def _registry(calls: Calls, result: dict[str, Any]) -> Registry:
    registry = Registry()

    @registry.action("acct.open")
    def open_account(ctx: Any) -> dict[str, Any]:
        calls.add("open", ctx)
        return result

    @registry.compensation("acct.close")
    def close_account(ctx: Any) -> None:
        calls.add("close", ctx)

    @registry.action("acct.finish")
    def finish(ctx: Any) -> dict[str, Any]:
        calls.add("finish", ctx)
        return {}

    return registry


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls,
            result: dict[str, Any], *, lenient: bool = False) -> Engine:
    files = {"events.yaml": TAXONOMY, "provision.yaml": SAGA, "endings.yaml": ENDINGS}
    if lenient:
        files.update(LENIENT)
    catalog = load(write_tree(tmp_path / "defs", files), strict=not lenient)
    return make_engine(engines, catalog, _registry(calls, result),
                       store_url(store_kind, tmp_path))


def _assert_refused(engine: Engine, run_id: str, calls: Calls, result: dict[str, Any],
                    field: str) -> None:
    view = engine.get_run(run_id)
    assert view.status == "compensated", view.error
    assert view.error is not None
    assert view.error.startswith("step open_account: EventError")
    assert field in view.error
    failed = [h for h in view.history if h.kind == "step.failed"]
    assert [h.step for h in failed] == ["open_account"]
    assert field in failed[0].detail["error"]
    step = view.step("open_account")
    assert step.status == "failed"
    assert step.result is None
    assert step.checkpoint == result  # the effect happened: kept so it can be undone
    # The effect is compensated, with what the handler returned.
    assert calls.names() == ["open", "close"]
    closed = calls.of("close")[0]
    assert closed["result"] == result
    assert closed["completed"] is False
    assert view.compensated_steps() == ["open_account"]
    # Nothing was published or left to publish: not the bad event, not its siblings.
    assert view.events == []
    assert not any(h.kind == "event.emitted" for h in view.history)
    assert engine.store.outbox_pending(100) == []
    assert engine.relay_outbox() == 0
    assert engine.bus is not None
    assert engine.bus.published == []  # type: ignore[attr-defined]


def test_valid_payload_is_emitted(engines: list[Engine], tmp_path: Path,
                                  store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, GOOD_RESULT)
    run = engine.start("provision", {"seats": 3})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert [e["type"] for e in view.events] == ["crm.account.noted", "crm.account.created"]
    created = view.events[1]
    assert created["data"] == {"account_id": ACCOUNT, "seats": 3,
                               "owner": {"email": "ada@example.com", "name": "Ada"}}
    assert created["dataschema"] == "urn:concordia:event:crm.account.created:v1"
    assert engine.store.outbox_pending(100) == []  # relayed by run_until_idle
    assert engine.bus is not None
    assert sorted(engine.bus.types()) == ["crm.account.created", "crm.account.noted"]  # type: ignore[attr-defined]
    assert calls.names() == ["open", "finish"]


@pytest.mark.parametrize(("result", "field"), [
    pytest.param({**GOOD_RESULT, "seats": "three"},
                 "field 'seats': 'three' is not of type 'integer'", id="wrong-type"),
    pytest.param({**GOOD_RESULT, "seats": 2.5},
                 "field 'seats': 2.5 is not of type 'integer'", id="float-for-integer"),
    pytest.param({**GOOD_RESULT, "account_id": "acct-42"},
                 "field 'account_id': 'acct-42' is not a 'uuid'", id="bad-uuid"),
    pytest.param({**GOOD_RESULT, "account_id": None},
                 "field 'account_id': None is not of type 'string'", id="null-required"),
    pytest.param({**GOOD_RESULT, "owner": {"name": "Ada"}},
                 "field 'owner.email': required field is missing", id="missing-nested"),
    pytest.param({**GOOD_RESULT, "owner": {"email": "not an address"}},
                 "field 'owner.email': 'not an address' is not a", id="bad-email"),
    pytest.param({**GOOD_RESULT, "owner": {"email": "ada@example.com", "nick": "a"}},
                 "field 'owner.nick': unknown field", id="unknown-nested"),
])
def test_invalid_payload_fails_the_step_naming_the_field(
        engines: list[Engine], tmp_path: Path, store_kind: str, result: dict[str, Any],
        field: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, result)
    run = engine.start("provision", {"seats": 3})
    engine.run_until_idle()
    _assert_refused(engine, run.id, calls, result, field)


@pytest.mark.parametrize(("saga", "code", "field"), [
    pytest.param("unknown_type", "unknown-event",
                 "unknown event type 'crm.account.opened'", id="unknown-type"),
    pytest.param("missing_field", "missing-field",
                 "field 'seats': required field is missing", id="missing-required"),
    pytest.param("extra_field", "unknown-field",
                 "field 'region': unknown field", id="unknown-field"),
])
def test_statically_refused_emits_are_refused_at_emit_time_too(
        engines: list[Engine], tmp_path: Path, store_kind: str, saga: str, code: str,
        field: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, GOOD_RESULT, lenient=True)
    # `concordia validate` reports the problem; the engine must not rely on that.
    problems = [p for p in engine.catalog.errors if saga in p.file]
    assert [p.code for p in problems] == [code]
    run = engine.start(saga, {})
    engine.run_until_idle()
    _assert_refused(engine, run.id, calls, GOOD_RESULT, field)


def test_invalid_on_complete_event_fails_the_run_and_compensates(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, GOOD_RESULT)
    run = engine.start("endings", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.error is not None
    assert view.error.startswith("on_complete: event 'crm.account.noted' v1: payload has 1 "
                                 "problem: field 'account_id': 'Ada' is not a 'uuid'")
    assert [h.kind for h in view.history].count("run.emit_failed") == 1
    # Both steps had succeeded; the compensable one is undone, and its own compensation
    # event is refused in turn (an email is not an account id): noted, not published.
    assert calls.names() == ["open", "finish", "close"]
    emit_failed = [h for h in view.history if h.kind == "compensation.emit_failed"]
    assert [h.step for h in emit_failed] == ["open_account"]
    assert "field 'account_id'" in emit_failed[0].detail["error"]
    assert view.events == []
    assert engine.store.outbox_pending(100) == []
    assert engine.bus is not None
    assert engine.bus.published == []  # type: ignore[attr-defined]
