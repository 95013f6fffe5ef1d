"""A process killed between suspension and delivery, or in the middle of a delivery,
loses nothing: a restarted engine (and a redelivery, as a broker would do for an event
it never saw acknowledged) completes the run, resuming it once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from concordia import Catalog, Engine, new_event
from tests.events_runtime import domain
from tests.events_runtime.conftest import ROOT

pytestmark = pytest.mark.slow


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "tests.events_runtime.child", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _write_event(path: Path, event: dict[str, object]) -> str:
    path.write_text(json.dumps(event), encoding="utf-8")
    return str(path)


def test_suspend_sigkill_restart_deliver_completes(tmp_path: Path) -> None:
    defs = domain.write_domain(tmp_path / "defs")
    db, effects = tmp_path / "runs.db", tmp_path / "effects.jsonl"
    placed = new_event("shop.order.placed", {"order_id": "o-1"}, source="urn:shop")
    child = _child("suspend", str(db), str(defs), str(effects),
                   _write_event(tmp_path / "placed.json", placed.to_dict()))
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line[1:] == ["suspended"], line
        run_id = line[0]
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)  # reaps it and closes the pipes
    assert child.returncode == -signal.SIGKILL

    engine = Engine(Catalog.load_strict([str(defs)]), domain.registry(effects=effects),
                    f"sqlite:///{db}")
    try:
        view = engine.get_run(run_id)
        assert view.status == "suspended"
        assert view.step("wait_payment").status == "awaiting"
        assert engine.run_until_idle() == 0
        payment = new_event("shop.payment.settled", {"order_id": "o-1", "amount": 9.0},
                            source="urn:payments")
        assert engine.deliver(payment).resumed == [run_id]
        engine.run_until_idle()
        view = engine.get_run(run_id)
        assert view.status == "completed"
        assert [e["type"] for e in view.events] == [
            "shop.payment.requested", "shop.order.confirmed", "shop.order.completed"]
    finally:
        engine.close()
    assert [e["handler"] for e in domain.effects_of(effects)] == ["reserve", "confirm"]


def test_kill_at_every_write_of_a_delivery_loses_nothing(tmp_path: Path) -> None:
    defs = domain.write_domain(tmp_path / "defs")
    catalog = Catalog.load_strict([str(defs)])
    base, effects = tmp_path / "base.db", tmp_path / "effects.jsonl"
    engine = Engine(catalog, domain.registry(effects=effects), f"sqlite:///{base}")
    run_id = engine.deliver(new_event("shop.order.placed", {"order_id": "o-1"},
                                      source="urn:shop")).started[0]
    engine.run_until_idle()
    assert engine.get_run(run_id).status == "suspended"
    engine.close()
    payment = new_event("shop.payment.settled", {"order_id": "o-1", "amount": 9.0},
                        source="urn:payments").to_dict()
    event_file = _write_event(tmp_path / "payment.json", payment)

    crashes = 0
    for k in range(1, 41):
        db = tmp_path / f"k{k}.db"
        shutil.copyfile(base, db)
        run_effects = tmp_path / f"effects{k}.jsonl"
        child = _child("crash", str(db), str(defs), str(run_effects), event_file, str(k))
        out, err = child.communicate(timeout=60)
        if child.returncode == 0:
            assert out.strip() == "survived"
            break
        assert child.returncode == -signal.SIGKILL, err
        crashes += 1
        # Restart: the broker redelivers the unacknowledged event; workers drive runs.
        engine = Engine(catalog, domain.registry(effects=run_effects), f"sqlite:///{db}")
        try:
            engine.deliver(payment)
            engine.drain(max_wait=5.0)  # a step the child had started: its lease expires
            view = engine.get_run(run_id)
            assert view.status == "completed", (k, view.status, view.error)
            assert [h.kind for h in view.history].count("await.resumed") == 1, k
            assert [e["type"] for e in view.events] == [
                "shop.payment.requested", "shop.order.confirmed", "shop.order.completed"], k
        finally:
            engine.close()
        confirms = [e for e in domain.effects_of(run_effects) if e["handler"] == "confirm"]
        # At least once, never more than once per interrupted attempt, one idempotency key.
        assert 1 <= len(confirms) <= 2, (k, confirms)
        assert {c["key"] for c in confirms} == {f"{run_id}:confirm"}
    else:
        pytest.fail("the delivery never completed without a crash")
    assert crashes >= 4  # inbox, resume, step start and step result were all interrupted
