"""Batched delivery: each event applied atomically and in order, as deliver() would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from concordia import Engine, EventError, InputError, VirtualClock, new_event
from concordia.store.changes import Commit
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url, write_tree

SETTLED = "shop.payment.settled"


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path))


def _placed(order_id: str) -> dict[str, Any]:
    return new_event("shop.order.placed", {"order_id": order_id}, source="urn:shop").to_dict()


def _settled(order_id: str, amount: float = 1.0) -> dict[str, Any]:
    return new_event(SETTLED, {"order_id": order_id, "amount": amount},
                     source="urn:payments").to_dict()


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_batch_starts_resumes_and_deduplicates_in_order(
        engines: list[Engine], tmp_path: Path, store_kind: str, batch_size: int) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    placed = [_placed(f"o-{i}") for i in range(5)]
    started = engine.deliver_many([*placed, placed[0]], batch_size=batch_size)
    assert [len(d.started) for d in started] == [1, 1, 1, 1, 1, 0]
    assert started[-1].duplicate
    engine.run_until_idle()
    runs = [d.started[0] for d in started[:5]]
    assert {engine.get_run(r).status for r in runs} == {"suspended"}

    payments = [_settled(f"o-{i}", float(i)) for i in range(5)]
    unrelated = new_event("shop.order.completed", {"order_id": "x"}, source="urn:x").to_dict()
    out = engine.deliver_many([payments[3], payments[3], unrelated, *payments],
                              batch_size=batch_size)
    assert [d.event_id for d in out] == [payments[3]["id"], payments[3]["id"], unrelated["id"],
                                         *(p["id"] for p in payments)]
    assert [d.duplicate for d in out] == [False, True, False, False, False, False, True, False]
    assert [d.resumed for d in out] == [[runs[3]], [], [], [runs[0]], [runs[1]], [runs[2]],
                                        [], [runs[4]]]
    engine.run_until_idle()
    for i, run_id in enumerate(runs):
        view = engine.get_run(run_id)
        assert view.status == "completed"
        assert view.step("wait_payment").result == {"order_id": f"o-{i}", "amount": float(i)}
    assert sorted(c["run_id"] for c in calls.of("confirm")) == sorted(runs)


def test_two_events_for_one_run_in_a_batch_resume_it_once(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = engine.deliver(_placed("o-1")).started[0]
    engine.run_until_idle()
    first, second = _settled("o-1", 1.0), _settled("o-1", 2.0)
    out = engine.deliver_many([first, second])
    assert out[0].resumed == [run_id]
    assert (out[1].resumed, out[1].buffered) == ([], True)  # read after the first applied
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert view.step("wait_payment").result["amount"] == 1.0
    assert len(calls.of("confirm")) == 1


@pytest.mark.parametrize(("spoil", "field"), [
    pytest.param(lambda e: e["data"].update(order_id=42), "order_id", id="payload"),
    pytest.param(lambda e: e.pop("source"), "source", id="envelope"),
])
def test_an_invalid_event_stops_the_batch_where_it_is(
        engines: list[Engine], tmp_path: Path, store_kind: str,
        spoil: Callable[[dict[str, Any]], object], field: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    good, bad, after = _placed("o-1"), _placed("o-x"), _placed("o-2")
    spoil(bad)
    with pytest.raises(EventError) as info:
        engine.deliver_many([good, bad, after])
    assert info.value.field == field
    assert engine.store.get_event(good["id"]) is not None
    assert engine.store.get_event(bad["id"]) is None
    assert engine.store.get_event(after["id"]) is None
    engine.run_until_idle()
    assert [c["input"] for c in calls.of("reserve")] == [{"order_id": "o-1"}]
    assert len(engine.deliver(after).started) == 1  # not seen, so not a duplicate


class _Interfering:
    """Delegates to a store; runs ``before`` ahead of the first delivery it writes."""

    def __init__(self, store: Any, before: Any) -> None:
        self._store = store
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def deliver(self, items: Any) -> list[Any]:
        if self._before is not None:
            before, self._before = self._before, None
            before()
        return list(self._store.deliver(items))


def test_a_run_changed_during_delivery_is_read_again(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = engine.deliver(_placed("o-1")).started[0]
    engine.run_until_idle()
    store = engine.store

    def touch() -> None:  # another writer moves the run (same state, new revision)
        run = store.get_run(run_id)
        assert run is not None
        store.commit(Commit(run=run, expect_rev=run.rev))

    engine.store = _Interfering(store, touch)  # type: ignore[assignment]
    payment = _settled("o-1")
    assert engine.deliver(payment).resumed == [run_id]
    engine.store = store
    engine.run_until_idle()
    view = engine.get_run(run_id)
    assert view.status == "completed"
    assert [h.kind for h in view.history].count("await.resumed") == 1
    assert engine.deliver(payment).duplicate


def test_a_timeout_that_wins_the_race_is_respected(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    calls = Calls()
    engine = _engine(engines, tmp_path, store_kind, calls)
    run_id = engine.deliver(_placed("o-1")).started[0]
    engine.run_until_idle()
    store = engine.store
    clock = engine.clock
    assert isinstance(clock, VirtualClock)

    def time_out() -> None:  # the await's timer fires between planning and writing
        engine.store = store
        clock.advance(3601)
        engine.advance(run_id)

    engine.store = _Interfering(store, time_out)  # type: ignore[assignment]
    delivered = engine.deliver(_settled("o-1"))
    engine.store = store
    assert delivered.resumed == []
    assert delivered.buffered
    view = engine.get_run(run_id)
    assert view.status == "compensated"
    assert "TimeoutError" in (view.error or "")
    assert calls.of("confirm") == []
    assert len(calls.of("release")) == 1


def test_a_trigger_whose_input_does_not_fit_delivers_nothing(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    root = domain.write_domain(tmp_path / "defs")
    write_tree(root, {"imports.yaml": """
        events:
          - name: shop.order.imported
            version: 1
            reliability: persistent
            payload_schema:
              order_id: {type: string, required: true}
              lines: {type: integer, required: true}
    """, "importer.yaml": """
        name: importer
        version: 1
        trigger:
          event: shop.order.imported
          input:
            order_id: event.data.lines
        input_schema:
          order_id: {type: string, required: true}
        steps:
          - name: reserve
            action: stock.reserve
            compensate: stock.release
    """})
    calls = Calls()
    engine = make_engine(engines, load(root), domain.registry(calls),
                         store_url(store_kind, tmp_path))
    before = _placed("o-1")
    imported = new_event("shop.order.imported", {"order_id": "o-2", "lines": 3},
                         source="urn:shop").to_dict()
    with pytest.raises(InputError) as info:
        engine.deliver_many([before, imported])
    assert info.value.field == "order_id"
    assert engine.store.get_event(before["id"]) is not None
    assert engine.store.get_event(imported["id"]) is None  # not even marked as seen
    assert [r.saga for r in engine.store.list_runs()] == ["checkout"]
