"""Fan-out over a list (``for_each``), run on every engine and store.

One step runs once per item, each item with its own idempotency key, attempts, result and
checkpoint; on failure exactly the items that completed or checkpointed are compensated,
each with its own result, last first.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.store.sqlite import SqliteStore
from tests.journal import records_of
from tests.runtime.sagas import action, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]


class Adapters:
    """Handlers for a saga ``prepare -> sync (for_each) -> activate``: each call recorded
    as (phase, step, index, attempt, key, result-or-checkpoint)."""

    def __init__(self, fail: dict[int, str] | None = None, flaky: dict[int, int] | None = None,
                 activate_fails: bool = False) -> None:
        self.fail = fail or {}  # item index -> "before" | "after_checkpoint"
        self.flaky = flaky or {}  # item index -> attempts that fail transiently
        self.activate_fails = activate_fails
        self.undo_fails: set[int] = set()  # item indexes whose compensation fails for now
        self.calls: list[tuple[str, str, int | None, int, str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.registry = Registry()
        self.registry.add_action("prep.do", self.prepare)
        self.registry.add_compensation("prep.undo", self.unprepare)
        self.registry.add_action("sync.do", self.sync)
        self.registry.add_compensation("sync.undo", self.restore)
        self.registry.add_action("activate.do", self.activate)
        self.registry.add_compensation("activate.undo", lambda ctx: None)

    def prepare(self, ctx: Any) -> Any:
        self.calls.append(("action", "prepare", None, ctx.attempt, ctx.idempotency_key, None))
        return {"adapters": ctx.input["adapters"]}

    def unprepare(self, ctx: Any) -> None:
        self.calls.append(("undo", "prepare", None, ctx.attempt, ctx.idempotency_key,
                           ctx.result))

    def sync(self, ctx: Any) -> Any:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            index = ctx.index
            assert ctx.vars == {"adapter": ctx.item}
            self.calls.append(("action", "sync", index, ctx.attempt, ctx.idempotency_key,
                               ctx.checkpoint_data))
            if ctx.attempt <= self.flaky.get(index, 0):
                raise ConnectionError(f"adapter {ctx.item} flaked")
            mode = self.fail.get(index)
            if mode == "after_checkpoint":
                ctx.checkpoint({"adapter": ctx.item, "previous": f"old-{index}"})
                raise PermanentError(f"adapter {ctx.item} broke midway",
                                     details={"adapter": ctx.item})
            if mode == "before":
                raise PermanentError(f"adapter {ctx.item} refused")
            return {"adapter": ctx.item, "previous": f"old-{index}"}
        finally:
            with self.lock:
                self.in_flight -= 1

    def restore(self, ctx: Any) -> None:
        self.calls.append(("undo", "sync", ctx.index, ctx.attempt, ctx.idempotency_key,
                           ctx.result))
        if ctx.index in self.undo_fails:
            raise PermanentError(f"adapter {ctx.item} unreachable")

    def activate(self, ctx: Any) -> Any:
        self.calls.append(("action", "activate", None, ctx.attempt, ctx.idempotency_key, None))
        if self.activate_fails:
            raise PermanentError("activation refused")
        return {"adapters": len(ctx.results["sync"])}

    def undone(self) -> list[tuple[str, int | None, Any]]:
        return [(step, index, value) for phase, step, index, _, _, value in self.calls
                if phase == "undo"]

    def synced(self) -> list[int]:
        return [index for phase, step, index, *_ in self.calls
                if phase == "action" and step == "sync" and index is not None]


def fan_out_saga(catalog_of: CatalogOf, **sync: Any) -> Catalog:
    retry = {"attempts": 3, "backoff": {"initial": "1s", "jitter": 0}}
    return catalog_of(saga("adapters", [
        action("prepare", action="prep.do", compensate="prep.undo"),
        action("sync", action="sync.do", compensate="sync.undo",
               for_each="results.prepare.adapters", retry=retry, **{"as": "adapter"},
               **sync),
        action("activate", action="activate.do", compensate="activate.undo"),
    ]))


NAMES = ["a0", "a1", "a2", "a3", "a4"]


def test_each_item_runs_once_with_its_own_key_result_and_record(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters()
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert handlers.synced() == [0, 1, 2, 3, 4]
    keys = [key for _, step, _, _, key, _ in handlers.calls if step == "sync"]
    assert keys == [f"{run.id}:sync:{i}" for i in range(5)]
    # The step's result is the list of the items' results, in list order.
    expected = [{"adapter": n, "previous": f"old-{i}"} for i, n in enumerate(NAMES)]
    assert view.step("sync").result == expected
    assert view.step("sync").items == NAMES
    assert view.results["sync"] == expected
    assert view.results["activate"] == {"adapters": 5}
    # One record per item, right after its step, each with its own attempt and result.
    assert [s.name for s in view.steps] == ["prepare", "sync", *[f"sync[{i}]" for i in
                                                                 range(5)], "activate"]
    assert [(s.status, s.attempt, s.result) for s in view.items("sync")] == [
        ("succeeded", 1, r) for r in expected]
    assert "sync[0]" not in view.results
    kinds = [(h.kind, h.step) for h in view.history if h.step and h.step.startswith("sync")]
    assert kinds[0] == ("step.expanded", "sync")
    assert kinds[1:3] == [("step.started", "sync[0]"), ("step.succeeded", "sync[0]")]
    assert kinds[-1] == ("step.succeeded", "sync")


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_at_most_concurrency_items_run_at_once(
        concurrency: int, catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters()
    engine = engine_for(fan_out_saga(catalog_of, concurrency=concurrency), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "completed"
    assert sorted(handlers.synced()) == [0, 1, 2, 3, 4]
    assert handlers.most_in_flight <= concurrency
    starts = [h.step for h in engine.get_run(run.id).history if h.kind == "step.started"
              and h.step and h.step.startswith("sync[")]
    assert starts == [f"sync[{i}]" for i in range(5)]  # in list order


@pytest.mark.parametrize("failing", [0, 2, 4])
@pytest.mark.parametrize("mode", ["before", "after_checkpoint"])
def test_a_failed_item_compensates_exactly_the_completed_items_in_reverse(
        failing: int, mode: str, catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(fail={failing: mode})
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert handlers.synced() == list(range(failing + 1))  # no item after it started
    undone = [(index, value) for step, index, value in handlers.undone() if step == "sync"]
    completed = [(i, {"adapter": NAMES[i], "previous": f"old-{i}"})
                 for i in reversed(range(failing))]
    checkpointed = ([(failing, {"adapter": NAMES[failing], "previous": f"old-{failing}"})]
                    if mode == "after_checkpoint" else [])
    assert undone == checkpointed + completed
    assert handlers.undone()[-1] == ("prepare", None, {"adapters": NAMES})
    sync = view.step("sync")
    assert sync.status == "failed"
    assert sync.error is not None
    assert sync.error.startswith(f"item {failing}: PermanentError")
    assert view.error == f"step sync: {sync.error}"
    assert [s.comp_status for s in view.items("sync")] == (
        ["succeeded"] * failing + (["succeeded"] if mode == "after_checkpoint" else [None]))
    undo_keys = [key for phase, step, _, _, key, _ in handlers.calls
                 if phase == "undo" and step == "sync"]
    assert undo_keys == [f"{run.id}:sync:{i}:compensate" for i, _ in checkpointed + completed]


def test_a_later_failure_compensates_every_item_last_first(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(activate_fails=True)
    engine = engine_for(fan_out_saga(catalog_of, concurrency=2), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert [(step, index) for step, index, _ in handlers.undone()] == [
        ("sync", 4), ("sync", 3), ("sync", 2), ("sync", 1), ("sync", 0), ("prepare", None)]
    assert view.compensated_steps() == [f"sync[{i}]" for i in (4, 3, 2, 1, 0)] + ["prepare"]


def test_items_retry_on_their_own_timers_with_their_own_attempts(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(flaky={1: 2, 3: 1})
    engine = engine_for(fan_out_saga(catalog_of, concurrency=2), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert [s.attempt for s in view.items("sync")] == [1, 3, 1, 2, 1]
    keys = {key for _, step, index, _, key, _ in handlers.calls if step == "sync" and index == 1}
    assert keys == {f"{run.id}:sync:1"}  # the same key on every attempt
    retries = [h.step for h in view.history if h.kind == "step.retry_scheduled"]
    assert sorted(retries) == ["sync[1]", "sync[1]", "sync[3]"]


def test_best_effort_undoes_a_failed_item_alone_and_carries_on(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(fail={1: "after_checkpoint", 3: "before"})
    engine = engine_for(fan_out_saga(catalog_of, mode="best_effort"), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert handlers.synced() == [0, 1, 2, 3, 4]
    # Item 1 checkpointed before failing: undone on its own; item 3 did nothing.
    assert handlers.undone() == [("sync", 1, {"adapter": "a1", "previous": "old-1"})]
    result = view.step("sync").result
    assert [entry.get("adapter") for entry in result] == ["a0", None, "a2", None, "a4"]
    assert result[1]["error"]["message"] == "adapter a1 broke midway"
    assert result[1]["error"]["details"] == {"adapter": "a1"}
    assert result[3]["error"]["type"] == "PermanentError"


def test_an_empty_list_succeeds_at_once(catalog_of: CatalogOf,
                                        engine_for: EngineFor) -> None:
    handlers = Adapters()
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": []})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert view.step("sync").result == []
    assert handlers.synced() == []


def test_a_list_expression_that_gives_no_list_fails_the_step(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters()
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": "a0,a1"})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"  # prepare is undone
    sync = view.step("sync")
    assert sync.status == "failed"
    assert sync.attempt == 1
    assert "gives str, not a list: for_each needs a list" in (sync.error or "")
    assert sync.error_detail is not None
    assert sync.error_detail["type"] == "ExpressionError"


def test_cancelling_mid_fan_out_abandons_waiting_items_and_undoes_done_ones(
        catalog_of: CatalogOf, engine_for: EngineFor, clock: VirtualClock) -> None:
    handlers = Adapters(flaky={2: 2})
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "waiting"  # item 2 waits on its retry
    view = engine.cancel(run.id, "operator")
    assert view.status == "cancelled"
    assert [s.status for s in view.items("sync")] == ["succeeded", "succeeded", "abandoned"]
    assert view.step("sync").status == "abandoned"
    assert [(step, index) for step, index, _ in handlers.undone()] == [
        ("sync", 1), ("sync", 0), ("prepare", None)]
    assert engine.store.next_wake_at() is None


def test_a_catch_entry_takes_a_failed_fan_out_and_keeps_its_done_items(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(fail={2: "before"})
    catch = [{"errors": ["PermanentError"], "result": {"synced": "0"}}]
    engine = engine_for(fan_out_saga(catalog_of, catch=catch), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert handlers.undone() == []  # caught: nothing compensates
    sync = view.step("sync")
    assert sync.status == "caught"
    assert sync.result is not None
    assert sync.result["synced"] == 0
    assert sync.result["error"]["message"] == "adapter a2 refused"
    assert view.results["activate"] == {"adapters": 2}  # len(results.sync) = its 2 keys


def test_sqlite_keeps_one_row_per_item(catalog_of: CatalogOf, sqlite_url: str,
                                       clock: VirtualClock) -> None:
    handlers = Adapters()
    with Engine(fan_out_saga(catalog_of), handlers.registry, sqlite_url, clock=clock) as engine:
        run = engine.start("adapters", {"adapters": NAMES})
        engine.run_until_idle()
    store = SqliteStore(sqlite_url)
    try:
        with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as db:
            steps_rows = db.execute("SELECT s.name FROM steps s JOIN runs r ON r.num = s.run "
                                    "WHERE r.id = ? ORDER BY s.name", (run.id,)).fetchall()
            item_rows = db.execute("SELECT i.step, i.idx FROM items i JOIN runs r ON "
                                   "r.num = i.run WHERE r.id = ? ORDER BY i.idx",
                                   (run.id,)).fetchall()
        assert [r[0] for r in steps_rows] == ["activate", "prepare", "sync"]
        assert item_rows == [("sync", i) for i in range(5)]  # one row an item
        steps = records_of(store, run.id)
        assert steps["sync[3]"].result == {"adapter": "a3", "previous": "old-3"}
        assert steps["sync"].items == NAMES
    finally:
        store.close()


def test_an_item_whose_compensation_keeps_failing_halts_the_run_until_retried(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    handlers = Adapters(activate_fails=True)
    handlers.undo_fails.add(2)
    engine = engine_for(fan_out_saga(catalog_of), handlers.registry)
    run = engine.start("adapters", {"adapters": NAMES})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensation_failed"
    assert view.error == ("compensation of sync[2] failed: PermanentError: adapter a2 "
                          "unreachable")
    assert [s.comp_status for s in view.items("sync")] == [
        None, None, "failed", "succeeded", "succeeded"]
    handlers.undo_fails.clear()
    view = engine.retry(run.id)
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert [(step, index) for step, index, _ in handlers.undone()] == [
        ("sync", 4), ("sync", 3), ("sync", 2), ("sync", 2), ("sync", 1), ("sync", 0),
        ("prepare", None)]
