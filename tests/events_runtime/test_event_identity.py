"""An event is identified by its source and id together (CloudEvents), in the inbox and after.

Two producers may mint the same id: each one's event is delivered; the same event from
the same producer, delivered again, has one effect. Event data the journal could not hold
(too deep, NaN) is refused before any expression or store sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from concordia import Engine, EventError, new_event
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url


def _engine(engines: list[Engine], tmp_path: Path, store_kind: str, calls: Calls) -> Engine:
    catalog = load(domain.write_domain(tmp_path / "defs"))
    return make_engine(engines, catalog, domain.registry(calls), store_url(store_kind, tmp_path))


def _placed(order_id: str, source: str, event_id: str) -> dict[str, Any]:
    event = new_event("shop.order.placed", {"order_id": order_id}, source=source).to_dict()
    event["id"] = event_id
    return event


def test_the_same_id_from_two_sources_is_two_events(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    engine = _engine(engines, tmp_path, store_kind, Calls())
    shared = "0190c0de-0000-7000-8000-000000000001"
    first = engine.deliver(_placed("o-1", "urn:shop:eu", shared))
    second = engine.deliver(_placed("o-2", "urn:shop:us", shared))
    again = engine.deliver(_placed("o-1", "urn:shop:eu", shared))
    assert len(first.started) == 1
    assert not first.duplicate
    assert len(second.started) == 1  # not mistaken for the first
    assert not second.duplicate
    assert again.duplicate
    assert again.started == []
    engine.run_until_idle()
    inputs = sorted(engine.get_run(r).input["order_id"]
                    for r in (*first.started, *second.started))
    assert inputs == ["o-1", "o-2"]


def test_a_resume_from_another_source_with_a_seen_id_still_resumes(
        engines: list[Engine], tmp_path: Path, store_kind: str) -> None:
    engine = _engine(engines, tmp_path, store_kind, Calls())
    run_id = engine.deliver(_placed("o-7", "urn:shop", "0190c0de-0000-7000-8000-00000000000a"))
    engine.run_until_idle()
    assert engine.get_run(run_id.started[0]).status == "suspended"
    payment = new_event("shop.payment.settled", {"order_id": "o-7", "amount": 3.0},
                        source="urn:payments").to_dict()
    payment["id"] = "0190c0de-0000-7000-8000-00000000000a"  # the trigger's id, another source
    delivered = engine.deliver(payment)
    assert delivered.resumed == run_id.started
    assert not delivered.duplicate
    engine.run_until_idle()
    assert engine.get_run(run_id.started[0]).status == "completed"


def _deep(levels: int) -> dict[str, Any]:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(levels):
        node["x"] = {}
        node = node["x"]
    return deep


@pytest.mark.parametrize("data", [
    {"order_id": "o-1", "amount": float("nan")},
    # 10,000 levels: the expression library would crash on it computing a match key
    {"order_id": "o-1", "amount": 1.0, "nested": _deep(10_000)},
], ids=["nan", "deep"])
def test_event_data_the_journal_cannot_hold_is_refused_whole(
        engines: list[Engine], tmp_path: Path, store_kind: str, data: Any) -> None:
    engine = _engine(engines, tmp_path, store_kind, Calls())
    event = new_event("shop.payment.settled", {"order_id": "o-1", "amount": 1.0},
                      source="urn:payments").to_dict()
    event["data"] = data
    with pytest.raises(EventError, match="data"):
        engine.deliver(event)
    assert engine.store.outbox_pending(10) == []
    assert engine.list_runs() == []
