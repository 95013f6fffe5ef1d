"""Child sagas (``saga:`` steps), run on every engine and store: the parent waits without
a thread, a child that compensates fails the parent's step, a completed child is undone
by its own compensations when the parent compensates, and ids link the two runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError, RetryableError
from concordia.runtime.engine import Engine
from concordia.runtime.kinds.children import child_run_id
from tests.runtime.sagas import Recorder, action, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]
NAMES = ["order", "ship", "charge", "capture"]


def transfer(catalog_of: CatalogOf, **pay: Any) -> Catalog:
    """``checkout``: order -> pay (child saga ``payment``: charge -> capture) -> ship."""
    return catalog_of(
        saga("checkout", [
            action("order"),
            {"name": "pay", "saga": "payment", "input": {"amount": "input.total * 100"},
             **pay},
            action("ship"),
        ]),
        saga("payment", [action("charge"), action("capture")],
             input_schema={"amount": {"type": "integer", "required": True}}),
    )


def fail(message: str) -> Callable[[Any], Any]:
    def handler(ctx: Any) -> Any:
        raise PermanentError(message, details={"where": ctx.step})
    return handler


def test_a_completed_child_completes_the_parents_step(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(NAMES)
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": 12}, correlation_id="corr-7",
                       causation_id="evt-1")
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ["order", "charge", "capture", "ship"]
    child_id = child_run_id(run.id, "pay")
    pay = view.step("pay")
    assert pay.checkpoint == {"run_id": child_id, "saga": "payment", "version": 1}
    assert pay.result == {"run_id": child_id, "status": "completed", "results": {
        "charge": {"step": "charge", "run": child_id},
        "capture": {"step": "capture", "run": child_id}}}
    child = engine.get_run(child_id)
    assert child.status == "completed"
    assert child.input == {"amount": 1200}
    assert (child.parent_run_id, child.parent_step) == (run.id, "pay")
    assert child.correlation_id == "corr-7"  # inherited
    assert child.causation_id == "evt-1"  # the parent's cause
    assert child.history[0].detail["parent_run_id"] == run.id
    lines = [(h.kind, h.detail.get("run_id")) for h in view.history
             if h.kind.startswith("child.")]
    assert lines == [("child.started", child_id), ("child.ended", child_id)]


def test_the_parent_waits_without_a_thread_until_the_child_ends(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(NAMES)
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": 1})
    engine.advance(run.id)  # one pass over the parent alone
    parent = engine.get_run(run.id)
    assert parent.status == "suspended"
    assert parent.wake_at is None  # no timer, no poll: the child's end wakes it
    assert parent.step("pay").status == "awaiting"
    child = engine.get_run(child_run_id(run.id, "pay"))
    assert child.status == "running"
    engine.advance(child.id)
    # The commit that ended the child made the parent runnable.
    assert engine.get_run(run.id).status == "running"
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "completed"


def test_a_child_that_compensates_fails_the_parents_step(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(NAMES, behaviours={"capture": fail("capture refused")})
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": 3})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    child_id = child_run_id(run.id, "pay")
    assert engine.get_run(child_id).status == "compensated"
    assert view.status == "compensated"
    assert rec.compensations() == ["charge", "order"]  # the child undid its own part
    pay = view.step("pay")
    assert pay.status == "failed"
    assert view.error == (f"step pay: ChildSagaError: child saga payment (run {child_id}) "
                          "ended compensated: step capture: PermanentError: capture refused")
    assert pay.error_detail is not None
    assert pay.error_detail["type"] == "ChildSagaError"
    assert pay.error_detail["details"]["status"] == "compensated"


def test_the_parent_compensating_reverts_a_completed_child_in_reverse(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(NAMES, behaviours={"ship": fail("no courier")})
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": 3})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    child_id = child_run_id(run.id, "pay")
    child = engine.get_run(child_id)
    assert view.status == "compensated"
    assert rec.compensations() == ["capture", "charge", "order"]
    # Each of the child's compensations got its own step's journaled result.
    assert [c["result"] for c in rec.calls if c["phase"] == "compensation"][:2] == [
        {"step": "capture", "run": child_id}, {"step": "charge", "run": child_id}]
    assert child.status == "cancelled"
    assert child.error == f"reverted: compensating run {run.id} (step pay)"
    moves = [(h.detail["from"], h.detail["event"]) for h in child.history if h.kind == "state"]
    assert ("completed", "revert") in moves
    assert view.step("pay").comp_status == "succeeded"
    kinds = [h.kind for h in child.history]
    assert kinds.count("run.completed") == 1
    assert kinds[-1] == "run.cancelled"


def test_a_catch_entry_takes_a_failed_child(catalog_of: CatalogOf,
                                            engine_for: EngineFor) -> None:
    rec = Recorder(NAMES, behaviours={"charge": fail("card declined")})
    catch = [{"errors": ["ChildSagaError"], "result": {"paid": "false"}}]
    engine = engine_for(transfer(catalog_of, catch=catch), rec.registry)
    run = engine.start("checkout", {"total": 3})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ["order", "charge", "ship"]
    assert rec.compensations() == []  # the child had nothing done to undo
    pay = view.step("pay")
    assert pay.status == "caught"
    assert pay.result is not None
    assert pay.result["paid"] is False
    assert pay.result["error"]["details"]["error"] == (
        "step charge: PermanentError: card declined")


def test_an_input_the_child_refuses_fails_the_step(catalog_of: CatalogOf,
                                                   engine_for: EngineFor) -> None:
    rec = Recorder(NAMES)
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": "twelve"})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert "ExpressionError" in (view.step("pay").error or "")
    assert rec.actions() == ["order"]


def test_cancelling_the_parent_cancels_a_running_child(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(NAMES, behaviours={"capture": lambda ctx: (_ for _ in ()).throw(
        RetryableError("bank busy"))})
    retry = {"attempts": 5, "backoff": {"initial": "1h"}}
    catalog = catalog_of(
        saga("checkout", [action("order"), {"name": "pay", "saga": "payment"},
                          action("ship")]),
        saga("payment", [action("charge"), action("capture", retry=retry)]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("checkout", {})
    engine.run_until_idle()
    child_id = child_run_id(run.id, "pay")
    assert engine.get_run(child_id).status == "waiting"  # capture waits on its retry
    engine.cancel(run.id, "customer left")
    engine.run_until_idle()
    assert engine.get_run(child_id).status == "cancelled"
    view = engine.get_run(run.id)
    assert view.status == "cancelled"
    assert rec.compensations() == ["charge", "order"]
    assert view.step("pay").comp_status == "succeeded"


def test_a_child_step_timeout_cancels_the_child_and_fails_the_step(
        catalog_of: CatalogOf, engine_for: EngineFor, clock: VirtualClock) -> None:
    rec = Recorder(NAMES, behaviours={"capture": lambda ctx: (_ for _ in ()).throw(
        RetryableError("bank busy"))})
    retry = {"attempts": 5, "backoff": {"initial": "1h"}}
    catalog = catalog_of(
        saga("checkout", [action("order"), {"name": "pay", "saga": "payment",
                                            "timeout": "10m"}, action("ship")]),
        saga("payment", [action("charge"), action("capture", retry=retry)]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("checkout", {})
    engine.run_until_idle()
    assert engine.get_run(run.id).wake_at == pytest.approx(clock.now() + 600, abs=1)
    clock.advance(601)
    engine.run_until_idle()
    view = engine.get_run(run.id)
    child = engine.get_run(child_run_id(run.id, "pay"))
    assert child.status == "cancelled"
    assert view.status == "compensated"
    assert "did not end within 600s" in (view.step("pay").error or "")
    assert rec.compensations() == ["charge", "order"]


def test_grandchildren_are_reverted_too(catalog_of: CatalogOf,
                                        engine_for: EngineFor) -> None:
    rec = Recorder(["a", "b", "c", "z"], behaviours={"z": fail("late failure")})
    catalog = catalog_of(
        saga("top", [action("a"), {"name": "mid", "saga": "middle"}, action("z")]),
        saga("middle", [action("b"), {"name": "low", "saga": "bottom"}]),
        saga("bottom", [action("c")]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("top", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert rec.actions() == ["a", "b", "c", "z"]
    assert rec.compensations() == ["c", "b", "a"]
    middle = child_run_id(run.id, "mid")
    bottom = child_run_id(middle, "low")
    assert engine.get_run(middle).status == "cancelled"
    assert engine.get_run(bottom).status == "cancelled"
    assert engine.get_run(bottom).parent_run_id == middle


def test_a_child_resumed_by_an_event_wakes_its_parent_in_the_same_delivery(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    from concordia.events.envelope import new_event

    rec = Recorder(["order", "ship"])
    catalog = catalog_of(
        saga("checkout", [action("order"), {"name": "pay", "saga": "payment"},
                          action("ship")]),
        saga("payment", [{"name": "confirmed", "await": "shop.payment.confirmed",
                          "match": "event.data.order_id == input.order_id",
                          "timeout": "1h"}]),
        {"name": "shop.payment.confirmed", "version": 1, "reliability": "persistent",
         "payload_schema": {"order_id": {"type": "string", "required": True}}})
    engine = engine_for(catalog, rec.registry)
    run = engine.start("checkout", {"order_id": "o-1"})
    engine.run_until_idle()
    child_id = child_run_id(run.id, "pay")
    assert engine.get_run(child_id).status == "suspended"
    assert engine.get_run(run.id).status == "suspended"
    delivery = engine.deliver(new_event("shop.payment.confirmed", {"order_id": "o-1"},
                                        source="urn:test:bank"))
    assert delivery.resumed == [child_id]
    # The delivery's commit ended the child and woke the parent: nothing else ran yet.
    assert engine.get_run(child_id).status == "completed"
    assert engine.get_run(run.id).status == "running"
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert view.step("pay").result["results"] == {"confirmed": {"order_id": "o-1"}}
    assert rec.actions() == ["order", "ship"]


def test_the_command_line_driving_a_run_drives_its_children_too(
        catalog_of: CatalogOf, clock: VirtualClock) -> None:
    from concordia.cli.drive import Progress, drive
    from concordia.cli.render import Times

    rec = Recorder(NAMES, behaviours={"ship": fail("no courier")})
    catalog = transfer(catalog_of)
    with Engine(catalog, rec.registry, "memory://", clock=clock) as engine:
        run = engine.start("checkout", {"total": 2})
        other = engine.start("checkout", {"total": 5})  # not this command's: left alone
        view = drive(engine, run.id, catalog.saga("checkout"), max_wait=60,
                     progress=Progress(quiet=True), times=Times())
        assert view.status == "compensated"
        assert engine.get_run(child_run_id(run.id, "pay")).status == "cancelled"
        assert engine.get_run(other.id).status == "running"
    assert rec.actions() == ["order", "charge", "capture", "ship"]
    assert rec.compensations() == ["capture", "charge", "order"]


def test_a_child_halted_for_an_operator_keeps_its_parent_waiting_until_retried(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    broken = {"on": True}

    def undo_charge(ctx: Any) -> None:
        if broken["on"]:
            raise PermanentError("refund service down")

    rec = Recorder(NAMES, behaviours={"capture": fail("capture refused")},
                   compensations={"charge": undo_charge})
    engine = engine_for(transfer(catalog_of), rec.registry)
    run = engine.start("checkout", {"total": 1})
    engine.run_until_idle()
    child_id = child_run_id(run.id, "pay")
    assert engine.get_run(child_id).status == "compensation_failed"
    assert engine.get_run(run.id).status == "suspended"  # waits: nothing to decide yet
    broken["on"] = False
    engine.retry(child_id)
    engine.run_until_idle()
    assert engine.get_run(child_id).status == "compensated"
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.step("pay").status == "failed"
