"""Events: deliveries applied whole or not at all (a duplicate or a conflict writes
nothing), the outbox in order until published, early events buffered for the awaits that
come later, and the two races between them refused."""

from __future__ import annotations

from typing import Any

import pytest

from concordia.status import RunStatus, StepStatus
from concordia.store.base import ConflictError, RunQueries, Store
from concordia.store.changes import Commit, Delivered, Inbound
from concordia.store.records import AwaitRecord, BufferedEvent
from tests.store.builders import T, advance, create, line, run, step
from tests.store.test_commits import envelope


def _await(run_id: str, key: str | None = "k-1", kind: str = "payment.done",
           step_name: str = "wait") -> AwaitRecord:
    return AwaitRecord(run_id, step_name, kind, key, "order", 1)


def _early(event_id: str, key: str | None = "k-1", kind: str = "payment.done",
           expires: float = T + 60) -> BufferedEvent:
    return BufferedEvent(event_id, kind, key, envelope(event_id, kind), expires)


def test_a_delivery_is_recorded_once_with_its_effects(store: Store) -> None:
    current = create(store, "r-1", RunStatus.SUSPENDED, steps=(step("wait", StepStatus.AWAITING),))
    current.status = RunStatus.RUNNING
    resume = Commit(run=current, expect_rev=1, steps=[step("wait", StepStatus.SUCCEEDED, 1)],
                    history=[line("r-1", "await.resumed", "wait")],
                    awaits_remove=[("r-1", "wait")])
    started = Commit(run=run("r-new"), history=[line("r-new", "run.started")])
    event = envelope("e-1")
    first = Inbound(event, T, creates=[started], resumes=[resume])
    assert store.deliver([first]) == [Delivered.APPLIED]
    assert current.rev == 2
    assert store.get_event("e-1") == event
    got = store.get_run("r-new")
    assert got is not None
    assert got.rev == 1
    again = Inbound(event, T + 1, creates=[Commit(run=run("r-other"))])
    assert store.deliver([again]) == [Delivered.DUPLICATE]
    assert store.get_run("r-other") is None
    loaded = store.load("r-1")
    assert loaded is not None
    assert (loaded.run.rev, loaded.steps["wait"].status) == (2, StepStatus.SUCCEEDED)


def test_a_conflicting_delivery_writes_nothing_and_can_come_again(store: Store) -> None:
    current = create(store, "r-1", RunStatus.SUSPENDED)
    create(store, "taken")
    stale = Commit(run=run("r-1"), expect_rev=9, history=[line("r-1", "stale")])
    event = envelope("e-1")
    assert store.deliver([Inbound(event, T, resumes=[stale],
                                  creates=[Commit(run=run("r-2"))])]) == [Delivered.CONFLICT]
    assert store.deliver([Inbound(event, T, creates=[Commit(run=run("taken"))])]) == [
        Delivered.CONFLICT]
    assert store.get_run("r-2") is None
    assert store.get_event("e-1") is None  # not in the inbox: it is planned again
    assert [h.kind for h in store.history("r-1")] == ["run.started"]
    current.status = RunStatus.RUNNING
    assert store.deliver([Inbound(event, T, resumes=[Commit(run=current, expect_rev=1)])]) == [
        Delivered.APPLIED]


def test_deliveries_in_one_call_each_stand_alone(store: Store) -> None:
    create(store, "taken")
    outcomes = store.deliver([
        Inbound(envelope("e-1"), T, creates=[Commit(run=run("a"))]),
        Inbound(envelope("e-2"), T, creates=[Commit(run=run("taken"))]),
        Inbound(envelope("e-1"), T, creates=[Commit(run=run("b"))]),
        Inbound(envelope("e-3"), T, creates=[Commit(run=run("c"))]),
    ])
    assert outcomes == [Delivered.APPLIED, Delivered.CONFLICT, Delivered.DUPLICATE,
                        Delivered.APPLIED]
    assert sorted(r.id for r in store.list_runs()) == ["a", "c", "taken"]


def test_the_outbox_holds_persistent_events_in_order_until_published(store: Store) -> None:
    assert isinstance(store, RunQueries)
    current = create(store, "r-1")
    events: list[dict[str, Any]] = [
        {"envelope": envelope(f"o-{i}", time=f"2027-01-15T10:00:0{i}Z"),
         "persistent": i != 1} for i in range(4)]
    advance(store, current, events=events[:2])
    advance(store, current, events=events[2:])
    assert store.outbox_backlog() == (3, "2027-01-15T10:00:00Z")
    pending = store.outbox_pending(10)
    assert [e["id"] for _, e in pending] == ["o-0", "o-2", "o-3"]
    assert [s for s, _ in pending] == sorted(s for s, _ in pending)
    assert store.outbox_pending(2) == pending[:2]
    store.mark_published([pending[0][0], pending[2][0]], T)
    assert [e["id"] for _, e in store.outbox_pending(10)] == ["o-2"]
    assert store.outbox_backlog() == (1, "2027-01-15T10:00:02Z")
    store.mark_published([], T)
    assert [e["id"] for e in store.run_events("r-1")] == ["o-0", "o-1", "o-2", "o-3"]
    assert store.get_event("o-1") == events[1]["envelope"]
    store.mark_published([pending[1][0]], T)
    assert store.outbox_backlog() == (0, None)


def test_awaits_are_found_by_type_and_key(store: Store) -> None:
    current = create(store, "r-1")
    advance(store, current, awaits_add=[_await("r-1"), _await("r-1", None, step_name="any"),
                                        _await("r-1", "k-2", step_name="other"),
                                        _await("r-1", "k-1", "refund.done", "refund")])
    assert store.find_awaits("payment.done", "k-1") == [
        _await("r-1", None, step_name="any"), _await("r-1")]
    assert store.find_awaits("payment.done", None) == [_await("r-1", None, step_name="any")]
    advance(store, current, awaits_remove=[("r-1", "wait"), ("r-1", "any")])
    assert store.find_awaits("payment.done", "k-1") == []
    assert store.find_awaits("payment.done", "k-2") == [
        _await("r-1", "k-2", step_name="other")]


def test_early_events_wait_in_the_buffer_until_consumed_or_expired(store: Store) -> None:
    assert store.deliver([Inbound(envelope("b-1"), T, buffer=[_early("b-1")]),
                          Inbound(envelope("b-2"), T, buffer=[_early("b-2", None)]),
                          Inbound(envelope("b-3"), T,
                                  buffer=[_early("b-3", "k-2", expires=T + 5)])]) == [
        Delivered.APPLIED] * 3
    assert [b.event_id for b in store.find_buffered("payment.done", "k-1", T)] == [
        "b-1", "b-2"]
    assert [b.event_id for b in store.find_buffered("payment.done", None, T)] == [
        "b-1", "b-2", "b-3"]
    assert [b.event_id for b in store.find_buffered("payment.done", None, T + 5)] == [
        "b-1", "b-2"]
    assert store.find_buffered("payment.done", "k-1", T)[0] == _early("b-1")
    current = create(store, "r-1")
    advance(store, current, consume_buffered=["b-1"], buffered_seen=["b-1", "b-2"],
            awaits_add=[_await("r-1")])
    assert [b.event_id for b in store.find_buffered("payment.done", "k-1", T)] == ["b-2"]


def test_an_await_is_refused_while_an_early_event_it_has_not_seen_waits(store: Store) -> None:
    """The race of an event and its run to the await: the run's writer looked for early
    events before one was buffered; its commit must not leave the event waiting."""
    current = create(store, "r-1")
    assert store.deliver([Inbound(envelope("b-1"), T, buffer=[_early("b-1")])]) == [
        Delivered.APPLIED]
    stale_view = Commit(run=current, expect_rev=1, awaits_add=[_await("r-1")],
                        history=[line("r-1", "await.suspended")])
    with pytest.raises(ConflictError):
        store.commit(stale_view)
    assert store.find_awaits("payment.done", "k-1") == []
    assert [h.kind for h in store.history("r-1")] == ["run.started"]
    # having seen it (and leaving it for the run to take), the await goes in
    advance(store, current, awaits_add=[_await("r-1")], buffered_seen=["b-1"])
    assert store.find_awaits("payment.done", "k-1") == [_await("r-1")]


def test_an_event_is_not_buffered_past_an_await_its_writer_has_not_seen(
        store: Store) -> None:
    """The other side of the race: the event's writer found no await, then one was
    registered; buffering the event now would leave the run waiting for it forever."""
    current = create(store, "r-1")
    advance(store, current, awaits_add=[_await("r-1")])
    blind = Inbound(envelope("b-1"), T, buffer=[_early("b-1")])
    assert store.deliver([blind]) == [Delivered.CONFLICT]
    assert store.find_buffered("payment.done", "k-1", T) == []
    assert store.get_event("b-1") is None
    seen = Inbound(envelope("b-1"), T, buffer=[_early("b-1")], awaits_seen=[("r-1", "wait")])
    assert store.deliver([seen]) == [Delivered.APPLIED]
    assert [b.event_id for b in store.find_buffered("payment.done", "k-1", T)] == ["b-1"]
