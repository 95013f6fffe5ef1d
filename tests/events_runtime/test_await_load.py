"""Load: 10,000 runs suspended on SQLite, resumed by 10,000 events, each exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from concordia import Engine, new_event
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls, load, make_engine, store_url

pytestmark = pytest.mark.slow

RUNS = 10_000


def test_ten_thousand_suspended_runs_resumed_by_ten_thousand_events(
        engines: list[Engine], tmp_path: Path) -> None:
    calls = Calls()
    catalog = load(domain.write_domain(tmp_path / "defs"))
    engine = make_engine(engines, catalog, domain.registry(calls),
                         store_url("sqlite", tmp_path), bus=None)
    t0 = time.perf_counter()
    placed = [new_event("shop.order.placed", {"order_id": f"o-{i}"}, source="urn:shop")
              for i in range(RUNS)]
    started = engine.deliver_many(placed)
    engine.run_until_idle()
    t1 = time.perf_counter()
    run_of = {f"o-{i}": d.started[0] for i, d in enumerate(started)}
    assert len(set(run_of.values())) == RUNS
    assert len(engine.store.list_runs(status="suspended", limit=RUNS + 1)) == RUNS

    # Payments arrive in another order than the runs were started, one delivery each.
    resumed: list[str] = []
    for i in reversed(range(RUNS)):
        payment = new_event("shop.payment.settled", {"order_id": f"o-{i}", "amount": float(i)},
                            source="urn:payments")
        delivery = engine.deliver(payment)
        assert not delivery.buffered
        resumed.extend(delivery.resumed)
    t2 = time.perf_counter()
    engine.run_until_idle()
    t3 = time.perf_counter()

    assert sorted(resumed) == sorted(run_of.values())
    completed = engine.store.list_runs(status="completed", limit=RUNS + 1)
    assert len(completed) == RUNS
    assert engine.store.list_runs(status="suspended", limit=10) == []
    confirmed = [c["run_id"] for c in calls.of("confirm")]
    assert sorted(confirmed) == sorted(run_of.values())  # each run resumed exactly once
    for order in ("o-0", "o-4321", f"o-{RUNS - 1}"):
        view = engine.get_run(run_of[order])
        assert view.step("wait_payment").result["order_id"] == order
        assert engine.store.find_awaits("shop.payment.settled", json.dumps(order)) == []
    timing = {"suspend_s": round(t1 - t0, 1), "deliver_s": round(t2 - t1, 1),
              "complete_s": round(t3 - t2, 1),
              "resumes_per_s": round(RUNS / (t3 - t1))}
    print(f"\n{RUNS} runs on SQLite: {timing}")
    assert t3 - t0 < 240, timing  # far above the expected ~30 s: only a pathology fails
