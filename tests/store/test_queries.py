"""Reads: runs listed and paged, counted, found by prefix; runs due now; definitions pinned
(the first recorded fingerprint of a version wins)."""

from __future__ import annotations

import pytest

from concordia.status import RunStatus
from concordia.store import open_store
from concordia.store.base import Batching, Claiming, Listening, RunQueries, Store
from tests.store.builders import T, create
from tests.store.conftest import Where


def _queries(store: Store) -> RunQueries:
    assert isinstance(store, RunQueries)  # every store answers them
    return store


def _many(store: Store) -> None:
    for i, (saga, status, corr) in enumerate([
            ("order", RunStatus.RUNNING, "c-a"), ("refund", RunStatus.COMPLETED, "c-a"),
            ("order", RunStatus.COMPLETED, "c-b"), ("order", RunStatus.FAILED, "c-a"),
            ("refund", RunStatus.RUNNING, "c-b"), ("order", RunStatus.COMPLETED, "c-a")]):
        create(store, f"r-{i}", status, saga=saga, correlation_id=corr)


def test_runs_are_listed_in_recorded_order_by_status_and_saga(store: Store) -> None:
    _many(store)
    assert [r.id for r in store.list_runs()] == [f"r-{i}" for i in range(6)]
    assert [r.id for r in store.list_runs(status="completed")] == ["r-1", "r-2", "r-5"]
    assert [r.id for r in store.list_runs(saga="order", limit=2)] == ["r-0", "r-2"]
    assert [r.id for r in store.list_runs(status="running", saga="refund")] == ["r-4"]


def test_pages_of_runs_newest_first_continue_after_a_run(store: Store) -> None:
    queries = _queries(store)
    _many(store)
    page = queries.page_runs(None, None, None, None, 4)
    assert page is not None
    assert [r.id for r in page] == ["r-5", "r-4", "r-3", "r-2"]
    rest = queries.page_runs(None, None, None, "r-2", 4)
    assert rest is not None
    assert [r.id for r in rest] == ["r-1", "r-0"]
    order = queries.page_runs("order", "completed", "c-a", None, 10)
    assert order is not None
    assert [r.id for r in order] == ["r-5"]
    corr = queries.page_runs(None, None, "c-a", "r-3", 10)
    assert corr is not None
    assert [r.id for r in corr] == ["r-1", "r-0"]
    assert queries.page_runs(None, None, None, "no-such-run", 10) is None


def test_runs_are_counted_by_saga_and_status(store: Store) -> None:
    _many(store)
    assert _queries(store).run_counts() == [
        ("order", "completed", 2), ("order", "failed", 1), ("order", "running", 1),
        ("refund", "completed", 1), ("refund", "running", 1)]


def test_run_ids_are_found_by_prefix_in_code_point_order(store: Store) -> None:
    for run_id in ["ab-2", "Ab-1", "ab-10", "ab\u00e9", "b-1", "a"]:
        create(store, run_id)
    assert store.find_run_ids("ab", 10) == ["ab-10", "ab-2", "ab\u00e9"]
    assert store.find_run_ids("ab", 2) == ["ab-10", "ab-2"]
    assert store.find_run_ids("", 3) == ["Ab-1", "a", "ab-10"]
    assert store.find_run_ids("zz", 3) == []


def test_due_runs_are_running_runs_in_recorded_order_then_due_timers(store: Store) -> None:
    for run_id, status, wake in [
            ("t-late", RunStatus.WAITING, 50.0), ("r-1", RunStatus.RUNNING, None),
            ("s-early", RunStatus.SUSPENDED, 10.0), ("r-2", RunStatus.RUNNING, None),
            ("s-never", RunStatus.SUSPENDED, None), ("t-future", RunStatus.WAITING, 500.0),
            ("done", RunStatus.COMPLETED, None), ("r-3", RunStatus.RUNNING, None),
            ("halted", RunStatus.STUCK, 1.0)]:
        create(store, run_id, status, wake_at=None if wake is None else T + wake)
    assert store.due_runs(T + 100, 10) == ["r-1", "r-2", "r-3", "s-early", "t-late"]
    assert store.due_runs(T + 100, 2) == ["r-1", "r-2"]
    assert store.due_runs(T + 100, 4) == ["r-1", "r-2", "r-3", "s-early"]
    assert store.due_runs(T + 5, 10) == ["r-1", "r-2", "r-3"]


def test_definitions_are_pinned_once_and_read_back(where: Where) -> None:
    store = where.open()
    doc = {"name": "order", "version": 1, "steps": [{"name": "a", "x": 1.5}]}
    assert store.pin_definitions([("order", 1, "f-1", doc)]) == {("order", 1): "f-1"}
    got = store.pin_definitions([("order", 1, "f-other", {"changed": True}),
                                 ("order", 2, "f-2", {"v": 2})])
    assert got == {("order", 1): "f-1", ("order", 2): "f-2"}
    assert store.pinned_definition("order", 1) == doc
    assert store.pinned_definition("order", 3) is None
    if where.kind != "memory":
        reader = open_store(where.url, readonly=True)
        try:
            assert reader.pin_definitions([("order", 3, "f-3", {})]) == got
            assert reader.pinned_definition("order", 3) is None
        finally:
            reader.close()


def test_each_store_offers_the_capabilities_it_has(where: Where) -> None:
    store = where.open()
    offers = {cap.__name__ for cap in (RunQueries, Batching, Claiming, Listening)
              if isinstance(store, cap)}
    assert offers == {"memory": {"RunQueries", "Claiming"},
                      "sqlite": {"RunQueries", "Batching"},
                      "postgres": {"RunQueries", "Batching", "Claiming", "Listening"}
                      }[where.kind]


def test_a_read_only_store_refuses_every_write(sql_where: Where) -> None:
    sql_where.open()
    reader = open_store(sql_where.url, readonly=True)
    try:
        with pytest.raises(Exception, match="read-only"):
            create(reader, "r-1")
        assert reader.get_run("r-1") is None
        assert reader.list_runs() == []
    finally:
        reader.close()
