"""An event and the run awaiting it, racing: a delivery planned before the run registered
its await, or a run that looked for early events just before one was buffered. Either way
the event resumes the run (the losing write is refused and redone), never sits in the
buffer while the run waits for its timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from concordia import Engine, new_event
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url

SETTLED = "shop.payment.settled"


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path))


def _placed(order_id: str) -> dict[str, Any]:
    return new_event("shop.order.placed", {"order_id": order_id}, source="urn:shop").to_dict()


def _settled(order_id: str) -> dict[str, Any]:
    return new_event(SETTLED, {"order_id": order_id, "amount": 5.0},
                     source="urn:payments").to_dict()


class _Proxy:
    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_delivery_planned_before_the_await_was_registered(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = engine.deliver(_placed("o-1")).started[0]
    engine.run_until_idle()
    store = engine.store

    class StaleRead(_Proxy):
        """The delivery's first read of the awaits predates the run's registration."""

        stale = True

        def find_awaits(self, event_type: str, key: str | None) -> list[Any]:
            found = store.find_awaits(event_type, key)
            return [a for a in found if a.run_id != run_id] if self.stale else found

        def deliver(self, items: Any) -> list[Any]:
            self.stale = False
            return list(store.deliver(items))

    engine.store = StaleRead(store)  # type: ignore[assignment]
    delivered = engine.deliver(_settled("o-1"))
    engine.store = store
    assert delivered.resumed == [run_id]
    assert not delivered.buffered
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "completed"
    assert len(calls.of("confirm")) == 1


def test_event_buffered_while_the_run_reaches_its_await(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    store = engine.store
    payment = _settled("o-1")
    raced: list[Any] = []

    class LateCallback(_Proxy):
        """The payment lands right after the run looked for early events."""

        def find_buffered(self, event_type: str, key: str | None, now: float) -> list[Any]:
            found = store.find_buffered(event_type, key, now)
            if not raced:
                raced.append(engine.deliver(payment))
            return found

    engine.store = LateCallback(store)  # type: ignore[assignment]
    run_id = engine.deliver(_placed("o-1")).started[0]
    engine.run_until_idle()
    engine.store = store
    engine.run_until_idle()
    [delivery] = raced
    assert (delivery.resumed, delivery.buffered) == ([], True)  # nothing awaited it yet
    view = engine.get_run(run_id)
    assert view.status == "completed", view.status
    resumed = [h for h in view.history if h.kind == "await.resumed"]
    assert [(h.detail["event_id"], h.detail["early"]) for h in resumed] == [
        (payment["id"], True)]
    # The refused transition is redone: the step before the await may run again, with
    # the same idempotency key (at least once, as after a crash).
    assert {c["idempotency_key"] for c in calls.of("reserve")} == {f"{run_id}:reserve"}
    assert len(calls.of("confirm")) == 1
