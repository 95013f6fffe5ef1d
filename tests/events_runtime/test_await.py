"""Durable await: resumption by a matching event, timeouts, early events, duplicates."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from concordia import Engine, EventError, VirtualClock, new_event
from concordia.runtime import delivery
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url

SETTLED = "shop.payment.settled"


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls,
            **kwargs: object) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path),
                       **kwargs)


def _clock(engine: Engine) -> VirtualClock:
    assert isinstance(engine.clock, VirtualClock)
    return engine.clock


def _placed(order_id: str) -> dict[str, object]:
    return new_event("shop.order.placed", {"order_id": order_id}, source="urn:shop").to_dict()


def _settled(order_id: str, amount: float = 10.0, **kwargs: str) -> dict[str, object]:
    return new_event(SETTLED, {"order_id": order_id, "amount": amount}, source="urn:payments",
                     **kwargs).to_dict()  # type: ignore[arg-type]


def _suspend(engine: Engine, order_id: str) -> str:
    run_id = engine.deliver(_placed(order_id)).started[0]
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "suspended"
    return run_id


def _awaiting(engine: Engine, order_id: str) -> list[str]:
    return [a.run_id for a in engine.store.find_awaits(SETTLED, json.dumps(order_id))]


def test_matching_event_resumes_the_suspended_run(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    view = engine.get_run(run_id)
    assert view.step("wait_payment").status == "awaiting"
    assert view.wake_at == pytest.approx(view.created_at + 3600, abs=1)  # the durable timer
    assert _awaiting(engine, "o-1") == [run_id]
    assert engine.run_until_idle() == 0  # nothing polls a suspended run

    payment = _settled("o-1", 42.0)
    delivered = engine.deliver(payment)
    assert (delivered.resumed, delivered.started, delivered.buffered) == ([run_id], [], False)
    assert _awaiting(engine, "o-1") == []
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert view.step("wait_payment").result == {"order_id": "o-1", "amount": 42.0}
    resumed = [h for h in view.history if h.kind == "await.resumed"]
    assert [(h.step, h.detail["event_id"], h.detail["early"]) for h in resumed] == [
        ("wait_payment", payment["id"], False)]
    # The timer died with the await: nothing happens when it would have fired.
    _clock(engine).advance(7200)
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "completed"
    assert calls.names() == ["reserve", "confirm"]


def test_delivery_that_ends_the_saga_completes_the_run_in_its_commit(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run = engine.start("last_wait", {"order_id": "o-1"})
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "suspended"
    payment = _settled("o-1")
    assert engine.deliver(payment).resumed == [run.id]
    view = engine.get_run(run.id)  # no worker pass needed: nothing is left to call
    assert view.status == "completed"
    kinds = [h.kind for h in view.history]
    tail = kinds[kinds.index("await.resumed"):]
    assert [k for k in tail if k != "state"] == [
        "await.resumed", "step.succeeded", "event.emitted", "run.completed"]
    [completed] = view.events
    assert (completed["type"], completed["causationid"]) == ("shop.order.completed",
                                                             payment["id"])
    assert [e["id"] for _, e in engine.store.outbox_pending(10)] == [completed["id"]]
    assert engine.run_until_idle() == 0
    assert engine.store.outbox_pending(10) == []  # relayed


def test_event_for_another_key_is_ignored(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    other = _suspend(engine, "o-2")
    delivered = engine.deliver(_settled("o-999"))
    assert delivered.resumed == []
    assert delivered.buffered  # kept in case its run has not got there yet
    engine.run_until_idle()
    assert {engine.get_run(r).status for r in (run_id, other)} == {"suspended"}
    assert calls.names() == ["reserve", "reserve"]
    assert engine.deliver(_settled("o-2")).resumed == [other]
    engine.run_until_idle()
    assert engine.get_run(other).status == "completed"
    assert engine.get_run(run_id).status == "suspended"
    assert [c["run_id"] for c in calls.of("confirm")] == [other]


def test_event_of_another_conversation_is_ignored(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    mine = "0190a8f4-0000-7000-8000-0000000000aa"
    theirs = "0190a8f4-0000-7000-8000-0000000000bb"
    run = engine.start("correlated", {"order_id": "o-1"}, correlation_id=mine)
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "suspended"
    # Right order, wrong conversation: not even a candidate (the index key differs).
    assert engine.deliver(_settled("o-1", correlation_id=theirs)).resumed == []
    # Right conversation, wrong order: a candidate, refused by the rest of the match.
    assert engine.deliver(_settled("o-2", correlation_id=mine)).resumed == []
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "suspended"
    assert calls.of("confirm") == []
    assert engine.deliver(_settled("o-1", correlation_id=mine)).resumed == [run.id]
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "completed"


def test_duplicate_delivery_resumes_once(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    payment = _settled("o-1")
    assert engine.deliver(payment).resumed == [run_id]
    again = engine.deliver(payment)
    assert again.duplicate
    assert (again.resumed, again.started, again.buffered) == ([], [], False)
    engine.run_until_idle()
    assert engine.deliver(payment).duplicate  # after completion too
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert [c["run_id"] for c in calls.of("confirm")] == [run_id]
    assert [h.kind for h in view.history].count("await.resumed") == 1
    # A duplicate trigger starts nothing either.
    placed = _placed("o-2")
    assert len(engine.deliver(placed).started) == 1
    assert engine.deliver(placed).started == []
    engine.run_until_idle()
    assert len(calls.of("reserve")) == 2


def test_duplicate_is_recognised_after_a_restart(engines: list[Engine], tmp_path: Path) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, "sqlite", calls)
    run_id = _suspend(engine, "o-1")
    payment = _settled("o-1")
    assert engine.deliver(payment).resumed == [run_id]
    engine.run_until_idle()
    engine.close()
    engines.remove(engine)
    reopened = _engine(engines, tmp_path, "sqlite", calls)
    assert reopened.deliver(payment).duplicate
    reopened.run_until_idle()
    assert len(calls.of("confirm")) == 1


def test_concurrent_duplicates_from_two_engines_resume_once(
        engines: list[Engine], tmp_path: Path) -> None:
    calls = Calls()
    first = _engine(engines, tmp_path, "sqlite", calls)
    second = _engine(engines, tmp_path, "sqlite", calls)
    for attempt in range(20):
        run_id = _suspend(first, f"o-{attempt}")
        payment = _settled(f"o-{attempt}")
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def deliver(engine: Engine, event: dict[str, object] = payment,
                    gate: threading.Barrier = barrier, out: list[object] = outcomes) -> None:
            gate.wait()
            out.append(engine.deliver(event))

        threads = [threading.Thread(target=deliver, args=(e,)) for e in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        resumed = [d.resumed for d in outcomes]  # type: ignore[attr-defined]
        duplicates = [d.duplicate for d in outcomes]  # type: ignore[attr-defined]
        assert sorted(duplicates) == [False, True]
        assert sorted(resumed) == [[], [run_id]]
        first.run_until_idle()
        assert first.get_run(run_id).status == "completed"
    assert len(calls.of("confirm")) == 20


def test_timeout_compensates(engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    _clock(engine).advance(3599)
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "suspended"
    _clock(engine).advance(2)
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "compensated"
    assert view.error == "step wait_payment: TimeoutError: no shop.payment.settled event " \
                         "within 3600s"
    assert [h.step for h in view.history if h.kind == "await.timeout"] == ["wait_payment"]
    assert view.compensated_steps() == ["reserve"]
    [release] = calls.of("release")
    assert release["result"] == {"reservation": "res-o-1"}
    assert release["completed"] is True
    assert _awaiting(engine, "o-1") == []
    assert [e["type"] for e in view.events] == ["shop.payment.requested",
                                                "shop.order.abandoned"]
    # A payment arriving after the timeout resumes nothing.
    assert engine.deliver(_settled("o-1")).resumed == []
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "compensated"
    assert calls.of("confirm") == []


def test_drain_fires_the_timeout_on_a_virtual_clock(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    engine.drain(max_wait=3599)  # the timer is further away: not fired
    assert engine.get_run(run_id).status == "suspended"
    engine.drain(max_wait=3600)
    assert engine.get_run(run_id).status == "compensated"


def test_on_timeout_continues_at_the_named_step(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run = engine.start("fallback", {"order_id": "o-1"})
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "suspended"
    _clock(engine).advance(601)
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed", view.error
    assert [(s.name, s.status) for s in view.steps] == [
        ("reserve", "succeeded"), ("wait_payment", "skipped"), ("confirm", "skipped"),
        ("close_out", "succeeded")]
    assert view.step("wait_payment").error == "timed out waiting for shop.payment.settled"
    assert calls.names() == ["reserve", "close_out"]
    assert calls.of("close_out")[0]["results"] == {"reserve": {"reservation": "res-o-1"}}
    assert view.compensated_steps() == []
    assert _awaiting(engine, "o-1") == []


def test_on_timeout_step_is_not_taken_when_the_event_comes(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run = engine.start("fallback", {"order_id": "o-1"})
    engine.run_until_idle()
    _clock(engine).advance(599)
    assert engine.deliver(_settled("o-1")).resumed == [run.id]
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert calls.names() == ["reserve", "confirm", "close_out"]


def test_early_event_is_buffered_then_consumed(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    payment = _settled("o-7", 7.0)
    early = engine.deliver(payment)
    assert (early.buffered, early.resumed, early.started) == (True, [], [])
    assert [b.envelope["id"] for b in engine.store.find_buffered(
        SETTLED, json.dumps("o-7"), engine.clock.now())] == [payment["id"]]
    _clock(engine).advance(30)
    run_id = engine.deliver(_placed("o-7")).started[0]
    engine.run_until_idle()  # reaches the await, finds the payment already there
    view = engine.get_run(run_id)
    assert view.status == "completed"
    resumed = [h for h in view.history if h.kind == "await.resumed"]
    assert [(h.detail["event_id"], h.detail["early"]) for h in resumed] == [
        (payment["id"], True)]
    assert view.step("wait_payment").result == {"order_id": "o-7", "amount": 7.0}
    assert view.events[1]["causationid"] == payment["id"]
    # Consumed: gone from the buffer, and no second run gets it.
    assert engine.store.find_buffered(SETTLED, json.dumps("o-7"), engine.clock.now()) == []
    second = engine.start("checkout", {"order_id": "o-7"})
    engine.run_until_idle()
    assert engine.get_run(second.id).status == "suspended"
    assert [c["run_id"] for c in calls.of("confirm")] == [run_id]


@pytest.mark.parametrize(("wait", "consumed"), [(59.0, True), (61.0, False)])
def test_early_event_expires_after_its_ttl(
        engines: list[Engine], tmp_path: Path, store_kind: str, wait: float,
        consumed: bool) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls, early_event_ttl=60.0)
    payment = _settled("o-8")
    assert engine.deliver(payment).buffered
    _clock(engine).advance(wait)
    run_id = engine.deliver(_placed("o-8")).started[0]
    engine.run_until_idle()
    view = engine.get_run(run_id)
    if consumed:
        assert view.status == "completed"
        return
    assert view.status == "suspended"
    assert calls.of("confirm") == []
    # The expired event is not taken later either: it was delivered (and deduplicated),
    # so only a new event resumes the run.
    assert engine.deliver(payment).duplicate
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "suspended"
    assert engine.deliver(_settled("o-8")).resumed == [run_id]
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "completed"


def test_early_event_buffer_is_bounded(engines: list[Engine], tmp_path: Path,
                                       store_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An early event is kept once per distinct match key of the sagas awaiting its type
    # (two here: the order id and the correlation id), so 6 entries hold 3 events.
    monkeypatch.setattr(delivery, "MAX_BUFFERED_PER_TYPE", 6)
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    ids = []
    for order in ("o-a", "o-b", "o-c", "o-d", "o-e"):
        event = _settled(order)
        ids.append(event["id"])
        assert engine.deliver(event).buffered
        _clock(engine).advance(1)
    kept = engine.store.find_buffered(SETTLED, None, engine.clock.now())
    assert len(kept) == 6
    assert sorted({b.envelope["id"] for b in kept}) == sorted(ids[2:])  # the oldest were dropped
    dropped = engine.start("checkout", {"order_id": "o-a"})
    kept_run = engine.start("checkout", {"order_id": "o-e"})
    engine.run_until_idle()
    assert engine.get_run(dropped.id).status == "suspended"
    assert engine.get_run(kept_run.id).status == "completed"


def test_event_nothing_awaits_is_recorded_not_an_error(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    event = new_event("shop.order.completed", {"order_id": "o-9"}, source="urn:elsewhere")
    delivered = engine.deliver(event)
    assert (delivered.duplicate, delivered.started, delivered.resumed,
            delivered.buffered) == (False, [], [], False)
    assert engine.store.get_event(event.id) == event.to_dict()
    assert engine.deliver(event).duplicate


def test_invalid_inbound_event_is_refused_and_not_recorded(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = _suspend(engine, "o-1")
    bad = new_event(SETTLED, {"order_id": "o-1", "amount": "ten"}, source="urn:payments")
    with pytest.raises(EventError) as info:
        engine.deliver(bad)
    assert info.value.field == "amount"
    assert engine.store.get_event(bad.id) is None
    unknown = new_event("shop.payment.refunded", {"order_id": "o-1"}, source="urn:payments")
    with pytest.raises(EventError, match="unknown event type"):
        engine.deliver(unknown)
    assert engine.get_run(run_id).status == "suspended"
    assert calls.of("confirm") == []
