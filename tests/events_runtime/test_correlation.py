"""Correlation and causation: a trigger's correlation id reaches every event and handler;
an awaited event becomes the cause of what follows it; the chain reads back in order."""

from __future__ import annotations

from pathlib import Path

from concordia import Engine, new_event
from concordia.ids import is_uuid
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url

CONVERSATION = "0190a8f4-0000-7000-8000-00000000c0de"


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path))


def test_trigger_and_awaited_event_set_correlation_and_cause(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    e1 = new_event("shop.order.placed", {"order_id": "o-1"}, source="urn:shop",
                   correlation_id=CONVERSATION)
    delivered = engine.deliver(e1)
    assert len(delivered.started) == 1
    engine.run_until_idle()
    run_id = delivered.started[0]
    view = engine.get_run(run_id)
    assert view.status == "suspended"
    assert view.correlation_id == CONVERSATION
    assert view.causation_id == e1.id

    # Before the await: the trigger is the cause.
    [requested] = view.events
    assert requested["type"] == "shop.payment.requested"
    assert requested["correlationid"] == CONVERSATION
    assert requested["causationid"] == e1.id
    [reserve] = calls.of("reserve")
    assert reserve["correlation_id"] == CONVERSATION
    assert reserve["causation_id"] == e1.id

    # The payment service answers the request, in the same conversation.
    e2 = new_event("shop.payment.settled", {"order_id": "o-1", "amount": 12.5},
                   source="urn:payments", correlation_id=CONVERSATION,
                   causation_id=requested["id"])
    assert engine.deliver(e2).resumed == [run_id]
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert [e["type"] for e in view.events] == [
        "shop.payment.requested", "shop.order.confirmed", "shop.order.completed"]
    for event in view.events:
        assert event["correlationid"] == CONVERSATION
        assert event["subject"] == run_id
    # After the await: the awaited event is the cause, for events and handlers alike.
    confirmed, completed = view.events[1], view.events[2]
    assert confirmed["causationid"] == e2.id
    assert completed["causationid"] == e2.id
    assert confirmed["data"] == {"order_id": "o-1", "amount": 12.5}
    [confirm] = calls.of("confirm")
    assert confirm["correlation_id"] == CONVERSATION
    assert confirm["causation_id"] == e2.id
    assert confirm["results"]["wait_payment"] == {"order_id": "o-1", "amount": 12.5}

    # The chain: trigger -> request -> payment -> completion, oldest first.
    chain = engine.causation_chain(completed["id"])
    assert [e["id"] for e in chain] == [e1.id, requested["id"], e2.id, completed["id"]]
    assert [e["type"] for e in chain] == [
        "shop.order.placed", "shop.payment.requested", "shop.payment.settled",
        "shop.order.completed"]
    assert [e["id"] for e in engine.causation_chain(confirmed["id"])] == [
        e1.id, requested["id"], e2.id, confirmed["id"]]
    assert [e["id"] for e in engine.causation_chain(requested["id"])] == [
        e1.id, requested["id"]]
    assert engine.causation_chain(e1.id) == [e1.to_dict()]

    # The transient request went out on commit; the persistent ones through the outbox.
    assert engine.bus is not None
    published = {e["id"]: e for e in engine.bus.published}  # type: ignore[attr-defined]
    assert set(published) == {requested["id"], confirmed["id"], completed["id"]}
    assert published[confirmed["id"]] == confirmed


def test_awaited_event_from_elsewhere_keeps_the_runs_correlation(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    # A producer that does not propagate the conversation: the run's events keep its own
    # correlation id, and the event still becomes their cause.
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    e1 = new_event("shop.order.placed", {"order_id": "o-2"}, source="urn:shop",
                   correlation_id=CONVERSATION)
    run_id = engine.deliver(e1).started[0]
    engine.run_until_idle()
    e2 = new_event("shop.payment.settled", {"order_id": "o-2", "amount": 3.0},
                   source="urn:payments")
    assert e2.correlationid != CONVERSATION
    assert engine.deliver(e2).resumed == [run_id]
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert {e["correlationid"] for e in view.events} == {CONVERSATION}
    assert [e["causationid"] for e in view.events] == [e1.id, e2.id, e2.id]
    # e2 names no cause: the chain of what it caused starts at e2.
    assert [e["id"] for e in engine.causation_chain(view.events[-1]["id"])] == [
        e2.id, view.events[-1]["id"]]


def test_trigger_without_correlation_gets_a_generated_one(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    raw = new_event("shop.order.placed", {"order_id": "o-3"}, source="urn:shop").to_dict()
    del raw["correlationid"]
    run_id = engine.deliver(raw).started[0]
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert is_uuid(view.correlation_id)
    assert view.correlation_id not in (raw["id"], run_id)
    assert view.causation_id == raw["id"]
    assert view.events[0]["correlationid"] == view.correlation_id
    assert calls.of("reserve")[0]["correlation_id"] == view.correlation_id


def test_run_started_directly_is_its_own_cause(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run = engine.start("checkout", {"order_id": "o-4"})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.causation_id is None
    assert is_uuid(view.correlation_id)
    [requested] = view.events
    assert requested["causationid"] == run.id
    assert requested["correlationid"] == view.correlation_id
    [reserve] = calls.of("reserve")
    assert reserve["causation_id"] == run.id
    assert reserve["correlation_id"] == view.correlation_id
    assert engine.causation_chain(requested["id"]) == [requested]


def test_run_started_directly_takes_the_callers_ids(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    cause = new_event("shop.order.placed", {"order_id": "o-5"}, source="urn:shop")
    run = engine.start("checkout", {"order_id": "o-5"}, correlation_id=CONVERSATION,
                       causation_id=cause.id)
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert (view.correlation_id, view.causation_id) == (CONVERSATION, cause.id)
    [requested] = view.events
    assert (requested["correlationid"], requested["causationid"]) == (CONVERSATION, cause.id)
    assert calls.of("reserve")[0]["causation_id"] == cause.id
