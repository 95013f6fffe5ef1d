"""The interpreter's behaviour, run on every store through the ``store_url`` fixture."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from statemachine.exceptions import TransitionNotAllowed

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import (
    BindingError,
    ConcordiaError,
    IllegalTransitionError,
    PermanentError,
    RetryableError,
    StoreError,
)
from concordia.machine import compile_saga, to_dot, to_mermaid
from concordia.machine.compile import TERMINAL
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.store import open_store
from concordia.store.sqlite import SCHEMA_VERSION, SqliteStore
from concordia.testing import Faults, assert_order
from tests.journal import records_of
from tests.runtime.sagas import Recorder, action, load_catalog, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]

FOUR = ["reserve", "charge", "pack", "ship"]


def kinds(view: Any, *wanted: str) -> list[tuple[str, str | None, int | None]]:
    return [(h.kind, h.step, h.attempt) for h in view.history if h.kind in wanted]


def four_step(catalog_of: CatalogOf, **step_extra: dict[str, Any]) -> Catalog:
    return catalog_of(saga("order", [action(n, **step_extra.get(n, {})) for n in FOUR]))


# -- forward path ------------------------------------------------------------------------------


def test_happy_path_runs_every_step_in_order_and_journals_results(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    seen_in_store: dict[str, Any] = {}
    engine: Engine

    def pack(ctx: Any) -> Any:
        # Earlier results are journaled before this step starts; this step is "running".
        steps = records_of(engine.store, ctx.run_id)
        seen_in_store.update({n: (r.status, r.result) for n, r in steps.items()})
        return {"parcel": ctx.input["order"] + "-p"}

    rec = Recorder(FOUR, behaviours={"pack": pack})
    engine = engine_for(four_step(catalog_of), rec.registry)
    started = engine.start("order", {"order": "o-1"}, correlation_id="corr-1",
                           causation_id="cause-1")
    assert started.status == "running"
    engine.run_until_idle()

    view = engine.get_run(started.id)
    assert view.status == "completed"
    assert view.state == "completed"
    assert view.error is None
    assert view.correlation_id == "corr-1"
    assert view.causation_id == "cause-1"
    assert rec.actions() == FOUR
    assert rec.compensations() == []
    assert_order(view, actions=FOUR, compensations=[])
    assert [s.status for s in view.steps] == ["succeeded"] * 4
    assert [s.attempt for s in view.steps] == [1] * 4
    assert view.results == {
        "reserve": {"step": "reserve", "run": view.id},
        "charge": {"step": "charge", "run": view.id},
        "pack": {"parcel": "o-1-p"},
        "ship": {"step": "ship", "run": view.id},
    }
    assert seen_in_store == {
        "reserve": ("succeeded", {"step": "reserve", "run": view.id}),
        "charge": ("succeeded", {"step": "charge", "run": view.id}),
        "pack": ("running", None),
    }  # a store keeps the steps a run has touched: "ship" is still pending
    # Each handler saw the results of the steps before it, and its own idempotency key.
    assert [sorted(c["results"]) for c in rec.calls] == [
        [], ["reserve"], ["charge", "reserve"], ["charge", "pack", "reserve"]]
    assert [c["key"] for c in rec.calls] == [f"{view.id}:{n}" for n in FOUR]
    assert view.history[0].kind == "run.started"
    assert view.history[-1].kind == "run.completed"
    moves = [(h.detail["from"], h.detail["to"]) for h in view.history if h.kind == "state"]
    assert moves == [("run_0", "run_1"), ("run_1", "run_2"), ("run_2", "run_3"),
                     ("run_3", "completed")]
    assert [r.id for r in engine.list_runs(status="completed")] == [view.id]


@pytest.mark.parametrize("failing", range(len(FOUR)))
def test_failure_at_each_step_compensates_completed_steps_in_reverse(
        failing: int, catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    name = FOUR[failing]

    def boom(ctx: Any) -> Any:
        raise PermanentError(f"{ctx.step} refused")

    rec = Recorder(FOUR, behaviours={name: boom})
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)

    done = FOUR[:failing]
    assert rec.actions() == FOUR[: failing + 1]
    assert rec.compensations() == list(reversed(done))
    assert view.status == ("compensated" if done else "failed")
    assert view.error == f"step {name}: PermanentError: {name} refused"
    assert view.step(name).status == "failed"
    assert view.step(name).comp_status is None
    for other in FOUR[failing + 1:]:
        assert view.step(other).status == "pending"
        assert view.step(other).attempt == 0
    # Each compensation received its step's journaled result.
    for call in rec.calls:
        if call["phase"] == "compensation":
            assert call["completed"] is True
            assert call["result"] == view.step(call["step"]).result
            assert call["result"] == {"step": call["step"], "run": view.id}
            assert call["key"] == f"{view.id}:{call['step']}:compensate"
    assert [s.comp_status for s in view.steps] == (
        ["succeeded"] * failing + [None] * (len(FOUR) - failing))
    assert view.compensated_steps() == list(reversed(done))
    assert view.history[-1].kind == f"run.{view.status}"


def test_failure_injected_by_harness_after_the_side_effect(
        catalog_of: CatalogOf, harness_for: Callable[..., Any]) -> None:
    rec = Recorder(FOUR)
    faults = Faults().fail("pack", when="after", error=PermanentError("lost the label"))
    h = harness_for(four_step(catalog_of), rec.registry, faults)
    view = h.run("order", {})
    # The handler ran (its effect happened), but without a checkpoint the step did not
    # journal anything the compensation could use, so only earlier steps are undone.
    assert rec.actions() == ["reserve", "charge", "pack"]
    assert h.log.calls == [("action", "reserve", 1), ("action", "charge", 1),
                           ("action", "pack", 1), ("compensation", "charge", 1),
                           ("compensation", "reserve", 1)]
    assert view.status == "compensated"
    assert_order(view, actions=["reserve", "charge"], compensations=["charge", "reserve"])


# -- checkpoints -------------------------------------------------------------------------------


def test_step_failing_after_checkpoint_is_compensated_with_the_checkpoint(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        ctx.checkpoint({"hold": "h-1", "amount": 5})
        raise PermanentError("card declined after hold")

    rec = Recorder(FOUR, behaviours={"charge": charge})
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)

    assert view.status == "compensated"
    assert rec.compensations() == ["charge", "reserve"]
    [undo_charge] = rec.of("compensation", "charge")
    assert undo_charge["result"] == {"hold": "h-1", "amount": 5}
    assert undo_charge["completed"] is False
    [undo_reserve] = rec.of("compensation", "reserve")
    assert undo_reserve["completed"] is True
    charge_rec = view.step("charge")
    assert charge_rec.status == "failed"
    assert charge_rec.result is None
    assert charge_rec.checkpoint == {"hold": "h-1", "amount": 5}
    assert charge_rec.comp_status == "succeeded"
    checkpoints = [h for h in view.history if h.kind == "step.checkpoint"]
    assert [(h.step, h.attempt, h.detail["data"]) for h in checkpoints] == [
        ("charge", 1, {"hold": "h-1", "amount": 5})]


def test_first_step_failing_after_checkpoint_ends_compensated_not_failed(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def reserve(ctx: Any) -> Any:
        ctx.checkpoint({"held": 1})
        raise PermanentError("warehouse closed")

    rec = Recorder(FOUR, behaviours={"reserve": reserve})
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert rec.calls[-1] == {"phase": "compensation", "step": "reserve", "attempt": 1,
                             "key": f"{view.id}:reserve:compensate",
                             "result": {"held": 1}, "completed": False}


def test_step_failing_before_any_checkpoint_is_not_compensated(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        raise PermanentError("declined")

    rec = Recorder(FOUR, behaviours={"charge": charge})
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert rec.compensations() == ["reserve"]
    assert view.step("charge").checkpoint is None
    assert view.step("charge").comp_status is None


def test_retry_sees_the_checkpoint_of_the_failed_attempt(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        if ctx.attempt == 1:
            ctx.checkpoint({"hold": "h-9"})
            raise ConnectionError("gateway reset")
        return {"charged": ctx.checkpoint_data["hold"]}

    rec = Recorder(FOUR, behaviours={"charge": charge})
    retry = {"retry": {"attempts": 2, "backoff": {"initial": "1s", "jitter": 0}}}
    engine = engine_for(four_step(catalog_of, charge=retry), rec.registry)
    run = engine.start("order", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert [c["checkpoint"] for c in rec.of("action", "charge")] == [None, {"hold": "h-9"}]
    assert view.step("charge").result == {"charged": "h-9"}


# -- retries -----------------------------------------------------------------------------------


def test_retries_wait_on_durable_timers_with_exponential_backoff(
        catalog_of: CatalogOf, engine_for: EngineFor, clock: VirtualClock) -> None:
    def charge(ctx: Any) -> Any:
        if ctx.attempt < 3:
            raise ConnectionError(f"down {ctx.attempt}")
        return {"charged": True}

    rec = Recorder(FOUR, behaviours={"charge": charge})
    retry = {"retry": {"attempts": 4, "backoff": {"initial": "10s", "factor": 3,
                                                   "jitter": 0}}}
    engine = engine_for(four_step(catalog_of, charge=retry), rec.registry)
    t0 = clock.now()
    run = engine.start("order", {})
    engine.run_until_idle()

    view = engine.get_run(run.id)
    assert view.status == "waiting"
    assert view.wake_at == t0 + 10
    assert view.step("charge").status == "waiting_retry"
    assert view.step("charge").wake_at == t0 + 10
    assert view.step("charge").error == "ConnectionError: down 1"
    assert engine.store.next_wake_at() == t0 + 10
    assert len(rec.of("action", "charge")) == 1

    clock.advance(9.5)  # not due yet: nothing runs
    assert engine.run_until_idle() == 0
    assert len(rec.of("action", "charge")) == 1

    clock.advance(0.5)
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert len(rec.of("action", "charge")) == 2
    assert view.status == "waiting"
    assert view.wake_at == t0 + 10 + 30  # initial * factor ** (attempt - 1)

    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert clock.now() == t0 + 40
    charges = rec.of("action", "charge")
    assert [c["attempt"] for c in charges] == [1, 2, 3]
    assert {c["key"] for c in charges} == {f"{view.id}:charge"}
    assert kinds(view, "step.retry_scheduled") == [("step.retry_scheduled", "charge", 1),
                                                   ("step.retry_scheduled", "charge", 2)]
    assert [h.detail["delay"] for h in view.history if h.kind == "step.retry_scheduled"] == [
        10, 30]
    assert view.step("charge").attempt == 3
    assert view.step("charge").error is None


def test_retry_timer_survives_a_new_engine_on_the_same_store(
        catalog_of: CatalogOf, engine_for: EngineFor, store_url: str,
        clock: VirtualClock) -> None:
    if store_url.startswith("memory"):
        pytest.skip("a memory store does not outlive its engine")
    calls: list[int] = []

    def charge(ctx: Any) -> Any:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return {"ok": True}

    catalog = four_step(catalog_of, charge={"retry": {"attempts": 2,
                                                       "backoff": {"initial": "1m"}}})
    first = engine_for(catalog, Recorder(FOUR, behaviours={"charge": charge}).registry)
    run = first.start("order", {})
    first.run_until_idle()
    wake = first.get_run(run.id).wake_at
    first.close()

    second = engine_for(catalog, Recorder(FOUR, behaviours={"charge": charge}).registry)
    assert second.get_run(run.id).status == "waiting"
    assert second.store.next_wake_at() == wake
    second.drain(max_wait=3600)
    assert second.get_run(run.id).status == "completed"
    assert calls == [1, 2]


@pytest.mark.parametrize(("policy", "error"), [
    ({"attempts": 5}, PermanentError("no such account")),
    ({"attempts": 5, "non_retryable": ["ValueError"]}, ValueError("bad amount")),
    ({"attempts": 5, "non_retryable": ["LookupError"]}, KeyError("currency")),
    ({"attempts": 5, "retryable": ["ConnectionError"]}, RuntimeError("bug")),
])
def test_non_retryable_errors_fail_at_once(
        policy: dict[str, Any], error: Exception, catalog_of: CatalogOf,
        engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        raise error

    rec = Recorder(FOUR, behaviours={"charge": charge})
    engine = engine_for(four_step(catalog_of, charge={"retry": policy}), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()  # no timer: it ends without the clock moving
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert len(rec.of("action", "charge")) == 1
    assert view.step("charge").status == "failed"
    assert view.step("charge").attempt == 1
    assert kinds(view, "step.retry_scheduled") == []
    assert rec.compensations() == ["reserve"]


def test_explicitly_retryable_error_is_retried_even_when_not_listed(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise RetryableError("try later")
        return {"ok": 1}

    rec = Recorder(FOUR, behaviours={"charge": charge})
    policy = {"attempts": 2, "retryable": ["ConnectionError"]}
    engine = engine_for(four_step(catalog_of, charge={"retry": policy}), rec.registry)
    run = engine.start("order", {})
    engine.drain()
    assert engine.get_run(run.id).status == "completed"
    assert [c["attempt"] for c in rec.of("action", "charge")] == [1, 2]


def test_retries_exhausted_fail_the_step_and_compensate(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        raise TimeoutError("gateway slow")

    rec = Recorder(FOUR, behaviours={"charge": charge})
    engine = engine_for(four_step(catalog_of, charge={"retry": {"attempts": 3}}),
                        rec.registry)
    run = engine.start("order", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert [c["attempt"] for c in rec.of("action", "charge")] == [1, 2, 3]
    assert view.step("charge").error == "TimeoutError: gateway slow"
    assert kinds(view, "step.failed") == [("step.failed", "charge", 3)]


def test_async_handler_is_stopped_by_its_per_attempt_timeout(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    cancelled: list[int] = []

    async def slow(ctx: Any) -> Any:
        if ctx.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return {"fast": ctx.attempt}

    registry = Registry()
    registry.add_action("charge.do", slow)
    registry.add_compensation("charge.undo", lambda ctx: None)
    catalog = catalog_of(saga("timed", [action("charge", timeout="50ms",
                                               retry={"attempts": 2})]))
    engine = engine_for(catalog, registry)
    run = engine.start("timed", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert cancelled == [1]
    assert view.status == "completed"
    assert view.step("charge").result == {"fast": 2}
    [retry] = [h for h in view.history if h.kind == "step.retry_scheduled"]
    assert retry.detail["error"] == "StepTimeoutError: attempt exceeded its timeout of 0.05s"


def test_async_handler_timing_out_on_every_attempt_fails_the_run(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    async def hang(ctx: Any) -> Any:
        await asyncio.sleep(30)

    registry = Registry()
    registry.add_action("charge.do", hang)
    registry.add_compensation("charge.undo", lambda ctx: None)
    catalog = catalog_of(saga("timed", [action("charge", timeout="20ms")]))
    engine = engine_for(catalog, registry)
    run = engine.start("timed", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "failed"
    assert "timeout of 0.02s" in (view.error or "")


# -- compensation ------------------------------------------------------------------------------


def test_compensation_is_retried_on_a_timer_then_succeeds(
        catalog_of: CatalogOf, engine_for: EngineFor, clock: VirtualClock) -> None:
    def ship(ctx: Any) -> Any:
        raise PermanentError("no truck")

    def unreserve(ctx: Any) -> Any:
        if ctx.attempt < 3:
            raise ConnectionError("inventory down")

    rec = Recorder(FOUR, behaviours={"ship": ship}, compensations={"reserve": unreserve})
    comp_retry = {"compensation_retry": {"attempts": 4,
                                         "backoff": {"initial": "5s", "jitter": 0}}}
    engine = engine_for(four_step(catalog_of, reserve=comp_retry), rec.registry)
    t0 = clock.now()
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "waiting"
    assert view.state == "undo_0"
    assert view.wake_at == t0 + 5
    assert view.step("reserve").comp_status == "waiting_retry"
    assert view.step("reserve").comp_error == "ConnectionError: inventory down"

    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert clock.now() == t0 + 5 + 10
    assert rec.compensations() == ["pack", "charge", "reserve", "reserve", "reserve"]
    assert [c["attempt"] for c in rec.of("compensation", "reserve")] == [1, 2, 3]
    assert view.step("reserve").comp_status == "succeeded"
    assert view.step("reserve").comp_attempt == 3
    assert view.step("reserve").comp_error is None


def test_compensation_that_keeps_failing_leaves_compensation_failed_then_retry_resumes(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    broken = {"charge": True}

    def ship(ctx: Any) -> Any:
        raise PermanentError("no truck")

    def refund(ctx: Any) -> Any:
        if broken["charge"]:
            raise ConnectionError("billing down")

    rec = Recorder(FOUR, behaviours={"ship": ship}, compensations={"charge": refund})
    catalog = four_step(catalog_of, charge={"compensation_retry": {"attempts": 3}})
    engine = engine_for(catalog, rec.registry)
    run = engine.start("order", {})
    engine.drain()
    view = engine.get_run(run.id)

    assert view.status == "compensation_failed"
    assert view.state == "compensation_failed"
    assert view.ended
    assert view.error == "compensation of charge failed: ConnectionError: billing down"
    assert view.step("charge").comp_status == "failed"
    assert view.step("charge").comp_attempt == 3
    assert view.step("pack").comp_status == "succeeded"
    assert view.step("reserve").comp_status is None  # undo stops at the stuck step
    assert rec.compensations() == ["pack", "charge", "charge", "charge"]
    assert "run.compensated" not in [h.kind for h in view.history]
    assert "charge" not in view.compensated_steps()
    assert engine.list_runs(status="compensated") == []
    assert engine.run_until_idle() == 0  # it stays put: nothing is due

    with pytest.raises(ConcordiaError, match="only a run in compensation_failed"):
        engine.retry(engine.start("order", {}).id)

    broken["charge"] = False
    resumed = engine.retry(run.id)
    assert resumed.status == "compensated"
    assert rec.compensations() == ["pack", "charge", "charge", "charge", "charge", "reserve"]
    assert resumed.compensated_steps() == ["pack", "charge", "reserve"]
    assert resumed.step("charge").comp_status == "succeeded"
    assert [h.kind for h in resumed.history].count("run.compensation_failed") == 1
    assert "run.retried" in [h.kind for h in resumed.history]
    assert resumed.history[-1].kind == "run.compensated"


def test_cancel_while_waiting_on_a_retry_timer_compensates_and_ends_cancelled(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        raise ConnectionError("down")

    rec = Recorder(FOUR, behaviours={"charge": charge})
    catalog = four_step(catalog_of, charge={"retry": {"attempts": 5,
                                                       "backoff": {"initial": "1h"}}})
    engine = engine_for(catalog, rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "waiting"

    view = engine.cancel(run.id, "customer changed their mind")
    assert view.status == "cancelled"
    assert view.state == "cancelled"
    assert view.error == "cancelled: customer changed their mind"
    assert rec.compensations() == ["reserve"]
    assert len(rec.of("action", "charge")) == 1  # the pending retry never fired
    assert view.step("charge").status == "abandoned"
    assert view.step("charge").wake_at is None
    assert view.wake_at is None
    assert engine.store.next_wake_at() is None
    kinds_seen = [h.kind for h in view.history]
    assert kinds_seen.index("run.cancel_requested") < kinds_seen.index(
        "compensation.started")
    assert kinds_seen[-1] == "run.cancelled"

    with pytest.raises(ConcordiaError, match="only a run moving forward"):
        engine.cancel(run.id, "again")


def test_cancel_before_any_step_ran_ends_cancelled_with_nothing_undone(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(FOUR)
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    view = engine.cancel(run.id, "duplicate order")
    assert view.status == "cancelled"
    assert rec.calls == []


# -- parallel stages ---------------------------------------------------------------------------


def diamond(catalog_of: CatalogOf) -> Catalog:
    return catalog_of(saga("fanout", [
        action("reserve"),
        action("charge", depends_on=["reserve"]),
        action("notify", depends_on=["reserve"]),
        action("ship", depends_on=["charge", "notify"]),
    ]))


def test_depends_on_steps_run_concurrently(catalog_of: CatalogOf,
                                           engine_for: EngineFor) -> None:
    both_inside = threading.Barrier(2, timeout=10)
    threads: dict[str, int] = {}

    def meet(ctx: Any) -> Any:
        both_inside.wait()  # only passes when the sibling is running at the same time
        threads[ctx.step] = threading.get_ident()
        return {"step": ctx.step}

    rec = Recorder(["reserve", "charge", "notify", "ship"],
                   behaviours={"charge": meet, "notify": meet})
    catalog = diamond(catalog_of)
    assert compile_saga(catalog.saga("fanout")).stages == (
        ("reserve",), ("charge", "notify"), ("ship",))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("fanout", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert threads["charge"] != threads["notify"]
    assert rec.actions()[0] == "reserve"
    assert sorted(rec.actions()[1:3]) == ["charge", "notify"]
    assert rec.actions()[3] == "ship"
    ship_call = rec.of("action", "ship")[0]
    assert sorted(ship_call["results"]) == ["charge", "notify", "reserve"]


def test_failure_after_a_parallel_stage_compensates_both_branches(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def ship(ctx: Any) -> Any:
        raise PermanentError("no truck")

    rec = Recorder(["reserve", "charge", "notify", "ship"], behaviours={"ship": ship})
    engine = engine_for(diamond(catalog_of), rec.registry)
    run = engine.start("fanout", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    # Reverse dependency order: both branches before what they depend on.
    assert rec.compensations() == ["notify", "charge", "reserve"]
    moves = [h.detail["to"] for h in view.history if h.kind == "state"]
    assert moves == ["run_1", "run_2", "undo_2", "undo_1", "undo_0", "compensated"]


def test_failing_branch_compensates_its_succeeded_sibling(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def notify(ctx: Any) -> Any:
        raise PermanentError("mail bounced")

    rec = Recorder(["reserve", "charge", "notify", "ship"], behaviours={"notify": notify})
    engine = engine_for(diamond(catalog_of), rec.registry)
    run = engine.start("fanout", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.step("charge").status == "succeeded"
    assert view.step("notify").status == "failed"
    assert view.step("ship").attempt == 0
    assert rec.compensations() == ["charge", "reserve"]


def test_branch_waiting_on_a_retry_is_abandoned_and_undone_from_its_checkpoint(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        ctx.checkpoint({"hold": "h-1"})
        raise ConnectionError("gateway reset")  # retryable: waits for attempt 2

    def notify(ctx: Any) -> Any:
        raise PermanentError("mail bounced")

    rec = Recorder(["reserve", "charge", "notify", "ship"],
                   behaviours={"charge": charge, "notify": notify})
    catalog = catalog_of(saga("fanout", [
        action("reserve"),
        action("charge", depends_on=["reserve"], retry={"attempts": 3}),
        action("notify", depends_on=["reserve"]),
        action("ship", depends_on=["charge", "notify"]),
    ]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("fanout", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert len(rec.of("action", "charge")) == 1  # its retry never ran
    assert view.step("charge").status == "abandoned"
    assert view.step("charge").wake_at is None
    assert rec.compensations() == ["charge", "reserve"]
    [undo] = rec.of("compensation", "charge")
    assert (undo["result"], undo["completed"]) == ({"hold": "h-1"}, False)


def test_sync_handler_timeout_stops_waiting_but_not_the_thread(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck(ctx: Any) -> Any:
        release.wait(10)
        finished.set()
        return {"late": True}

    rec = Recorder(["charge"], behaviours={"charge": stuck})
    catalog = catalog_of(saga("timed", [action("charge", timeout="20ms")]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("timed", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "failed"
    assert view.error == "step charge: StepTimeoutError: attempt exceeded its timeout of 0.02s"
    assert not finished.is_set()  # Python cannot interrupt the worker thread
    release.set()
    assert finished.wait(10)
    view = engine.get_run(run.id)  # the late result is not journaled
    assert view.step("charge").status == "failed"
    assert view.step("charge").result is None


# -- results -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"at": datetime(2026, 1, 1, tzinfo=UTC)},
    {"n": float("nan")},
    object(),
    {1: {2, 3}},
], ids=["datetime", "nan", "object", "set"])
def test_a_result_that_is_not_json_serialisable_fails_the_step(
        bad: Any, catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(FOUR, behaviours={"pack": lambda ctx: bad})
    catalog = four_step(catalog_of, pack={"retry": {"attempts": 3}})
    engine = engine_for(catalog, rec.registry)
    run = engine.start("order", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.step("pack").status == "failed"
    assert view.step("pack").result is None
    assert (view.step("pack").error or "").startswith("ValueLimitError: the result of step pack: ")
    assert len(rec.of("action", "pack")) == 1  # retrying would not change the result
    assert rec.compensations() == ["charge", "reserve"]


def test_results_are_detached_from_the_handlers_objects(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    shared = {"items": [1, 2]}
    rec = Recorder(FOUR, behaviours={"reserve": lambda ctx: shared})
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    shared["items"].append(3)
    assert engine.get_run(run.id).step("reserve").result == {"items": [1, 2]}


def test_handlers_mutating_their_context_cannot_change_the_journal(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def scribble(ctx: Any) -> Any:
        ctx.input["order"]["lines"].append("forged")
        for value in ctx.results.values():
            value["items"].clear()
        return {"items": [ctx.step]}

    def ship(ctx: Any) -> Any:
        scribble(ctx)
        raise PermanentError("no truck")

    def undo(ctx: Any) -> None:
        ctx.result["items"].append("forged")
        ctx.input["order"]["lines"].clear()

    rec = Recorder(FOUR, behaviours=dict.fromkeys(FOUR[:3], scribble) | {"ship": ship},
                   compensations=dict.fromkeys(FOUR, undo))
    engine = engine_for(four_step(catalog_of), rec.registry)
    run = engine.start("order", {"order": {"lines": ["a", "b"]}})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.input == {"order": {"lines": ["a", "b"]}}
    assert view.results == {n: {"items": [n]} for n in FOUR[:3]}
    # Each handler saw the journal as it was, not as an earlier handler left its copy.
    assert [c["results"] for c in rec.calls if c["phase"] == "action"][2] == {
        "reserve": {"items": ["reserve"]}, "charge": {"items": ["charge"]}}
    assert [c["result"] for c in rec.calls if c["phase"] == "compensation"] == [
        {"items": ["pack"]}, {"items": ["charge"]}, {"items": ["reserve"]}]


# -- logging -----------------------------------------------------------------------------------

LOG_KEYS = ("run_id", "saga", "step", "attempt", "correlation_id", "causation_id")


def _expected(view: Any, step: str, attempt: int) -> dict[str, Any]:
    return {"run_id": view.id, "saga": view.saga, "step": step, "attempt": attempt,
            "correlation_id": "corr-7", "causation_id": "cause-7"}


def test_ctx_log_lines_carry_the_run_context(catalog_of: CatalogOf,
                                             engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        ctx.log.info("charging", amount=5)
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return {}

    rec = Recorder(FOUR, behaviours={"charge": charge})
    engine = engine_for(four_step(catalog_of, charge={"retry": {"attempts": 2}}),
                        rec.registry)
    with structlog.testing.capture_logs() as logs:
        run = engine.start("order", {}, correlation_id="corr-7", causation_id="cause-7")
        engine.drain()
    view = engine.get_run(run.id)
    lines = [entry for entry in logs if entry["event"] == "charging"]
    assert len(lines) == 2
    for attempt, entry in enumerate(lines, start=1):
        assert {k: entry[k] for k in LOG_KEYS} == _expected(view, "charge", attempt)
        assert entry["amount"] == 5


@pytest.mark.parametrize("mode", ["sync", "sync_timeout", "async", "parallel"])
def test_structlog_loggers_inside_handlers_see_the_run_context(
        mode: str, catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    """``structlog.get_logger()`` lines carry the context through contextvars."""
    seen: dict[str, dict[str, Any]] = {}

    def look(ctx: Any) -> Any:
        seen[ctx.step] = dict(structlog.contextvars.get_contextvars())
        return {}

    async def look_async(ctx: Any) -> Any:
        await asyncio.sleep(0)
        return look(ctx)

    registry = Registry()
    for name in ("reserve", "charge", "notify"):
        registry.add_action(f"{name}.do", look_async if mode == "async" else look)
        registry.add_compensation(f"{name}.undo", lambda ctx: None)
    extra: dict[str, Any] = {"timeout": "30s"} if mode == "sync_timeout" else {}
    deps: dict[str, Any] = {"depends_on": ["reserve"]} if mode == "parallel" else {}
    catalog = catalog_of(saga("logged", [
        action("reserve", **extra), action("charge", **extra, **deps),
        action("notify", **extra, **deps)]))
    engine = engine_for(catalog, registry)
    run = engine.start("logged", {}, correlation_id="corr-7", causation_id="cause-7")
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    for step in ("reserve", "charge", "notify"):
        assert {k: seen[step].get(k) for k in LOG_KEYS} == _expected(view, step, 1), step
    # Nothing leaks out of the handler's call.
    assert not set(LOG_KEYS) & set(structlog.contextvars.get_contextvars())


def test_structlog_lines_are_rendered_with_the_context(catalog_of: CatalogOf,
                                                        engine_for: EngineFor) -> None:
    """The full path: a configured processor chain merges the context into each line."""
    capture = structlog.testing.LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        def charge(ctx: Any) -> Any:
            structlog.get_logger("billing").info("from module logger")
            return {}

        rec = Recorder(FOUR, behaviours={"charge": charge})
        engine = engine_for(four_step(catalog_of), rec.registry)
        run = engine.start("order", {}, correlation_id="corr-7", causation_id="cause-7")
        engine.run_until_idle()
    finally:
        structlog.configure(**old)
    view = engine.get_run(run.id)
    [line] = [e for e in capture.entries if e["event"] == "from module logger"]
    assert {k: line[k] for k in LOG_KEYS} == _expected(view, "charge", 1)


# -- binding -----------------------------------------------------------------------------------


def test_missing_handlers_are_all_listed_in_one_binding_error(
        catalog_of: CatalogOf, store_url: str) -> None:
    catalog = catalog_of(
        saga("order", [action(n) for n in FOUR]),
        saga("refund", [action("refund", compensate=None), action("notify")]))
    registry = Registry()
    registry.add_action("reserve.do", lambda ctx: None)
    registry.add_compensation("reserve.undo", lambda ctx: None)
    registry.add_action("charge.do", lambda ctx: None)
    with pytest.raises(BindingError) as err:
        Engine(catalog, registry, store_url)
    missing = {(kind, name) for kind, name, _ in err.value.missing}
    assert missing == {
        ("compensation", "charge.undo"),
        ("action", "pack.do"), ("compensation", "pack.undo"),
        ("action", "ship.do"), ("compensation", "ship.undo"),
        ("action", "refund.do"),
        ("action", "notify.do"), ("compensation", "notify.undo"),
    }
    message = str(err.value)
    assert message.startswith("8 handler(s) not registered")
    for _, name in missing:
        assert repr(name) in message
    assert "order v1 step pack" in message


def test_from_directory_checks_bindings(tmp_path: Path) -> None:
    load_catalog(saga("order", [action("reserve")]), directory=tmp_path / "definitions")
    with pytest.raises(BindingError) as err:
        Engine.from_directory(str(tmp_path), Registry(), store="memory://")
    assert [name for _, name, _ in err.value.missing] == ["reserve.do", "reserve.undo"]


# -- the compiled machine ----------------------------------------------------------------------


def test_machine_class_has_a_state_per_stage_undo_and_end(catalog_of: CatalogOf) -> None:
    catalog = diamond(catalog_of)
    compiled = compile_saga(catalog.saga("fanout"))
    states = set(compiled.states())
    assert states == {"run_0", "run_1", "run_2", "undo_0", "undo_1", "undo_2",
                      "completed", "compensated", "failed", "cancelled",
                      "compensation_failed"}
    finals = {s.id for s in compiled.machine_class.states if s.final}
    # `completed` is left only by `revert`: a parent compensating its completed child.
    assert finals == set(TERMINAL) - {"completed"}
    assert compiled.move("completed", "revert") == "undo_2"
    assert compiled.labels["run_1"] == "charge + notify"
    assert compiled.labels["undo_1"] == "undo notify + charge"
    assert compile_saga(catalog.saga("fanout")) is compiled  # compiled once


def test_machine_rejects_illegal_moves(catalog_of: CatalogOf) -> None:
    compiled = compile_saga(four_step(catalog_of).saga("order"))
    assert compiled.move("run_0", "done") == "run_1"
    assert compiled.move("run_3", "done") == "completed"
    assert compiled.move("run_2", "fail") == "undo_2"
    assert compiled.move("undo_2", "undone") == "undo_1"
    assert compiled.move("undo_0", "finish_failed") == "failed"
    assert compiled.move("undo_1", "stuck") == "compensation_failed"
    assert compiled.move("compensation_failed", "resume_1") == "undo_1"
    for state, event in [("run_0", "undone"), ("undo_0", "undone"), ("undo_1", "done"),
                         ("completed", "fail"), ("compensated", "resume_0"),
                         ("run_1", "finish_compensated"), ("cancelled", "done")]:
        with pytest.raises(IllegalTransitionError) as err:
            compiled.move(state, event)
        assert (err.value.state, err.value.event) == (state, event)

    machine = compiled.machine_class()
    assert machine.current_state_value == "run_0"
    with pytest.raises(TransitionNotAllowed):
        machine.send("undone")
    machine.send("done")
    machine.send("fail")
    assert machine.current_state_value == "undo_1"
    with pytest.raises(TransitionNotAllowed):
        machine.send("done")
    machine.send("undone")
    machine.send("finish_compensated")
    assert machine.current_state_value == "compensated"
    for event in ("done", "fail", "undone", "resume_0"):
        with pytest.raises(TransitionNotAllowed):
            machine.send(event)


def test_transition_table_is_exactly_the_machine_class(catalog_of: CatalogOf) -> None:
    compiled = compile_saga(diamond(catalog_of).saga("fanout"))
    events = {event for _, event in compiled.transitions}
    for state in compiled.states():
        for event in events:
            machine = compiled.machine_class(start_value=state)
            target = compiled.transitions.get((state, event))
            if target is None:
                with pytest.raises(TransitionNotAllowed):
                    machine.send(event)
            else:
                machine.send(event)
                assert machine.current_state_value == target


@pytest.mark.parametrize("render", [to_mermaid, to_dot])
def test_diagrams_name_every_state_and_highlight_the_current_one(
        render: Callable[..., str], catalog_of: CatalogOf) -> None:
    compiled = compile_saga(diamond(catalog_of).saga("fanout"))
    plain = render(compiled)
    current = render(compiled, "undo_1")
    for state in compiled.states():
        assert state in plain
    for (source, event), target in compiled.transitions.items():
        assert event in plain
        assert source in plain
        assert target in plain
    if render is to_mermaid:
        assert plain.startswith("stateDiagram-v2\n")
        assert "class undo_1 current" in current
        assert "class " not in plain
    else:
        assert plain.startswith('digraph "fanout_v1" {')
        [line] = [ln for ln in current.splitlines() if ln.strip().startswith("undo_1 [")]
        assert "filled" in line
        assert "filled" not in plain
        assert sum("filled" in ln for ln in current.splitlines()) == 1


def test_diagram_highlights_a_runs_state(catalog_of: CatalogOf,
                                         engine_for: EngineFor) -> None:
    def charge(ctx: Any) -> Any:
        raise ConnectionError("down")

    rec = Recorder(FOUR, behaviours={"charge": charge})
    catalog = four_step(catalog_of, charge={"retry": {"attempts": 2}})
    engine = engine_for(catalog, rec.registry)
    run = engine.start("order", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.state == "run_1"
    assert f"class {view.state} current" in to_mermaid(compile_saga(catalog.saga("order")),
                                                       view.state)


# -- stores ------------------------------------------------------------------------------------


def test_runs_are_listed_and_filtered(catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def ship(ctx: Any) -> Any:
        if ctx.input.get("fail"):
            raise PermanentError("no")
        return {}

    rec = Recorder(FOUR, behaviours={"ship": ship})
    engine = engine_for(four_step(catalog_of), rec.registry)
    ok = engine.start("order", {})
    bad = engine.start("order", {"fail": True})
    engine.run_until_idle()
    assert [r.id for r in engine.list_runs()] == [ok.id, bad.id]
    assert [r.id for r in engine.list_runs(status="compensated")] == [bad.id]
    assert [r.id for r in engine.list_runs(status="completed", saga="order")] == [ok.id]
    assert engine.list_runs(saga="other") == []


def test_sqlite_store_reopened_after_close_still_has_the_runs(
        catalog_of: CatalogOf, sqlite_url: str) -> None:
    def ship(ctx: Any) -> Any:
        raise PermanentError("no truck")

    catalog = four_step(catalog_of)
    rec = Recorder(FOUR, behaviours={"ship": ship})
    with Engine(catalog, rec.registry, sqlite_url, clock=VirtualClock()) as engine:
        run = engine.start("order", {"order": "o-1"})
        engine.run_until_idle()
        before = engine.get_run(run.id)
        other = engine.start("order", {})  # not driven yet
    with Engine(catalog, Recorder(FOUR).registry, sqlite_url,
                clock=VirtualClock()) as engine:
        after = engine.get_run(run.id)
        assert after == before
        assert after.status == "compensated"
        assert after.input == {"order": "o-1"}
        assert after.step("charge").result == {"step": "charge", "run": run.id}
        assert engine.get_run(other.id).status == "running"
        engine.run_until_idle()  # the new engine picks up the run left behind
        assert engine.get_run(other.id).status == "completed"


def test_sqlite_migrations_build_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = SqliteStore(f"sqlite:///{path}")
    assert store.schema_version() == SCHEMA_VERSION
    store.close()

    def schema() -> list[tuple[str, str, str]]:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            return conn.execute("SELECT type, name, sql FROM sqlite_master "
                                "ORDER BY type, name").fetchall()
        finally:
            conn.close()

    built = schema()
    assert {name for kind, name, _ in built if kind == "table"} >= {
        "runs", "history", "events", "outbox", "inbox", "awaits", "buffered",
        "decisions"}
    reopened = open_store(f"sqlite:///{path}")
    assert isinstance(reopened, SqliteStore)
    assert reopened.schema_version() == SCHEMA_VERSION
    reopened.close()
    assert schema() == built


def test_sqlite_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SqliteStore(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than"):
        SqliteStore(f"sqlite:///{path}")


def test_sqlite_store_uses_full_synchronous_wal(sqlite_url: str) -> None:
    store = SqliteStore(sqlite_url)
    try:
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
