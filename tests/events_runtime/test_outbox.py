"""Outbox relay: persistent events are published exactly once, through the outbox written
in the run's transaction; transient events go out after their commit, best effort."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from concordia import Engine, InMemoryBus, new_event
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url


class FlakyBus(InMemoryBus):
    """Fails the publishes whose 1-based number is in ``failing``."""

    def __init__(self, failing: set[int] | None = None, types: set[str] | None = None) -> None:
        super().__init__()
        self.failing = failing or set()
        self.failing_types = types or set()
        self.attempts = 0

    def publish(self, envelope: dict[str, Any]) -> None:
        self.attempts += 1
        if self.attempts in self.failing or envelope["type"] in self.failing_types:
            raise ConnectionError("broker unavailable")
        super().publish(envelope)


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls,
            bus: InMemoryBus | None) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path),
                       bus=bus)


def _complete_orders(engine: Engine, count: int) -> list[str]:
    runs = [engine.deliver(new_event("shop.order.placed", {"order_id": f"o-{i}"},
                                     source="urn:shop")).started[0] for i in range(count)]
    engine.run_until_idle()
    for i in range(count):
        engine.deliver(new_event("shop.payment.settled", {"order_id": f"o-{i}", "amount": 1.0},
                                 source="urn:payments"))
    engine.run_until_idle()
    assert {engine.get_run(r).status for r in runs} == {"completed"}
    return runs


def _persistent_ids(engine: Engine, runs: list[str]) -> list[str]:
    return [e["id"] for r in runs for e in engine.get_run(r).events
            if e["type"] in ("shop.order.confirmed", "shop.order.completed")]


def test_persistent_events_are_relayed_exactly_once(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    bus = InMemoryBus()
    engine = _engine(engines, tmp_path, store_kind, Calls(), bus)
    runs = _complete_orders(engine, 3)
    expected = _persistent_ids(engine, runs)
    assert len(expected) == 6
    assert engine.store.outbox_pending(100) == []
    assert engine.relay_outbox() == 0  # marked published: nothing is sent twice
    counts = Counter(e["id"] for e in bus.published)
    assert {i: counts[i] for i in expected} == dict.fromkeys(expected, 1)
    assert max(counts.values()) == 1
    # Inbound events are not re-published by the relay.
    assert all(e["source"] == "urn:concordia" for e in bus.published)


def test_a_failed_publish_is_retried_by_the_next_relay_in_order(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    bus = FlakyBus(types={"shop.order.confirmed", "shop.order.completed"})
    engine = _engine(engines, tmp_path, store_kind, Calls(), bus)
    runs = _complete_orders(engine, 3)  # the runs are not held up by the broker
    expected = _persistent_ids(engine, runs)
    pending = [e["id"] for _, e in engine.store.outbox_pending(100)]
    assert sorted(pending) == sorted(expected)
    assert not any(e["id"] in expected for e in bus.published)
    bus.failing_types = set()
    bus.failing = {bus.attempts + 3}  # the third publish of the next relay fails
    assert engine.relay_outbox() == 2
    assert [e["id"] for _, e in engine.store.outbox_pending(100)] == pending[2:]
    assert engine.relay_outbox() == 4
    assert engine.store.outbox_pending(100) == []
    relayed = [e["id"] for e in bus.published if e["id"] in expected]
    assert relayed == pending  # outbox order, each once


def test_outbox_left_by_a_stopped_process_is_relayed_by_the_next(
        engines: list[Engine], tmp_path: Path) -> None:
    calls = Calls()
    first = _engine(engines, tmp_path, "sqlite", calls, None)  # no bus: nothing is sent
    runs = _complete_orders(first, 2)
    expected = _persistent_ids(first, runs)
    assert first.relay_outbox() == 0
    assert sorted(e["id"] for _, e in first.store.outbox_pending(100)) == sorted(expected)
    first.close()
    engines.remove(first)
    bus = InMemoryBus()
    second = _engine(engines, tmp_path, "sqlite", calls, bus)
    assert second.relay_outbox() == 4
    assert sorted(e["id"] for e in bus.published) == sorted(expected)
    second.close()
    engines.remove(second)
    third = _engine(engines, tmp_path, "sqlite", calls, InMemoryBus())
    assert third.relay_outbox() == 0


def test_transient_events_go_out_after_their_commit_and_never_via_the_outbox(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    bus = InMemoryBus()
    engine = _engine(engines, tmp_path, store_kind, Calls(), bus)
    seen_in_store: list[bool] = []

    def on_publish(envelope: dict[str, Any]) -> None:
        if envelope["type"] == "shop.payment.requested":
            seen_in_store.append(engine.store.get_event(envelope["id"]) is not None)
            # Its run's transition is durable: the reserve step is journaled as done.
            run = engine.get_run(envelope["subject"])
            seen_in_store.append(run.step("reserve").status == "succeeded")

    bus.subscribe(on_publish)
    engine.deliver(new_event("shop.order.placed", {"order_id": "o-1"}, source="urn:shop"))
    # Published by the run's own pass, before any relay.
    engine.advance(engine.store.due_runs(engine.clock.now(), 10)[0])
    assert bus.types() == ["shop.payment.requested"]
    assert seen_in_store == [True, True]
    assert engine.store.outbox_pending(100) == []


def test_a_lost_transient_event_does_not_stop_the_run_and_is_not_resent(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    bus = FlakyBus(types={"shop.payment.requested"})
    engine = _engine(engines, tmp_path, store_kind, Calls(), bus)
    [run_id] = _complete_orders(engine, 1)
    view = engine.get_run(run_id)
    assert view.status == "completed"
    requested = view.events[0]
    assert requested["type"] == "shop.payment.requested"  # journaled all the same
    bus.failing_types = set()
    assert engine.relay_outbox() == 0
    assert "shop.payment.requested" not in bus.types()
    assert sorted(bus.types()) == ["shop.order.completed", "shop.order.confirmed"]
