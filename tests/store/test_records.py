"""Records: every field of a step and an item reads back as written (values exactly as
JSON holds them), a commit touches only the records it carries, and a run's history comes
back whole and in order, however long the run."""

from __future__ import annotations

from typing import Any

from concordia.runtime import transitions
from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.base import Store
from tests.store.builders import T, advance, create, item, line, step

VALUE: dict[str, Any] = {
    "zeta": "ünïcødé ✓ \"quoted\" \\ back \n", "big": 2**62 + 1, "pi": 3.141592653589793,
    "tiny": 1e-300, "neg": -0.5, "list": [None, True, False, {"a": []}], "": "empty key"}


def test_every_field_of_a_step_and_an_item_reads_back_as_written(store: Store) -> None:
    full = step("charge", StepStatus.CAUGHT, 3, result=VALUE, checkpoint=[1, "two"],
                error="boom", wake_at=T + 1.5, comp_status=CompStatus.WAITING_RETRY,
                comp_attempt=2, comp_error="undo failed", started_at=T, finished_at=T + 2,
                error_detail={"type": "x", "status": 502, "details": {"k": [1]}}, caught=1,
                items=[{"sku": "a"}, "b", 3, None])
    one = item("charge", 7, StepStatus.FAILED, 2, result="plain text", checkpoint=0,
               error="nope", wake_at=T, comp_status=CompStatus.SUCCEEDED, comp_attempt=1,
               comp_error=None, started_at=T, finished_at=T + 1, error_detail={"a": None},
               caught=0)
    create(store, "r-1", steps=(full,), items=(one,))
    loaded = store.load("r-1")
    assert loaded is not None
    assert loaded.steps == {"charge": full}
    assert loaded.items == {("charge", 7): one}
    result = loaded.steps["charge"].result
    assert list(result) == list(VALUE)  # key order kept
    assert type(result["big"]) is int
    assert type(loaded.items[("charge", 7)].checkpoint) is int


def test_a_commit_changes_the_records_it_carries_and_no_other(store: Store) -> None:
    current = create(store, "r-1", steps=(step("a"), step("b"), step("fan")),
                     items=tuple(item("fan", i) for i in range(3)))
    advance(store, current, steps=[step("b", StepStatus.RUNNING, 1)],
            items=[item("fan", 1, StepStatus.SUCCEEDED, 1, result=VALUE), item("other", 0)])
    loaded = store.load("r-1")
    assert loaded is not None
    assert loaded.steps == {"a": step("a"), "b": step("b", StepStatus.RUNNING, 1),
                            "fan": step("fan")}
    assert loaded.items == {("fan", 0): item("fan", 0),
                            ("fan", 1): item("fan", 1, StepStatus.SUCCEEDED, 1, result=VALUE),
                            ("fan", 2): item("fan", 2), ("other", 0): item("other", 0)}


def test_runs_keep_their_records_apart(store: Store) -> None:
    create(store, "r-1", steps=(step("a", StepStatus.SUCCEEDED),), items=(item("a", 0),))
    create(store, "r-2", steps=(step("a", StepStatus.FAILED),), items=(item("a", 1),))
    one, two = store.load("r-1"), store.load("r-2")
    assert one is not None
    assert two is not None
    assert (one.steps["a"].status, list(one.items)) == (StepStatus.SUCCEEDED, [("a", 0)])
    assert (two.steps["a"].status, list(two.items)) == (StepStatus.FAILED, [("a", 1)])
    assert store.load("nobody") is None


def test_a_long_run_reads_its_whole_history_in_order(store: Store) -> None:
    current = create(store, "r-1", owner="w", expires=T + 9999,
                     steps=(step("poll", StepStatus.RUNNING, 1),))
    kinds = ["run.started"]
    for i in range(1, 60):  # far past any store's tail of recent lines
        advance(store, current, steps=[step("poll", StepStatus.RUNNING, i)],
                history=[line("r-1", f"retry-{i}", "poll", T + i, pad="x" * 80)])
        assert store.patch(transitions.checkpoint("r-1", "poll", i, "w", {"i": i},
                                                  T + i + 0.5)).applied
        kinds += [f"retry-{i}", "step.checkpoint"]
    history = store.history("r-1")
    assert [h.kind for h in history] == kinds
    assert [h.at for h in history] == sorted(h.at for h in history)
    assert history[2] == line("r-1", "step.checkpoint", "poll", T + 1.5, data={"i": 1})
    advance(store, current, status=RunStatus.COMPLETED,
            history=[line("r-1", "run.completed", at=T + 99)])
    assert [h.kind for h in store.history("r-1")] == [*kinds, "run.completed"]
    create(store, "r-2")
    assert [h.kind for h in store.history("r-2")] == ["run.started"]
    assert store.history("nobody") == []


def test_a_run_created_ended_keeps_its_history(store: Store) -> None:
    create(store, "r-1", RunStatus.FAILED)
    assert [h.kind for h in store.history("r-1")] == ["run.started"]
    assert store.patch(transitions.cancel_request("r-1", "no", T)).applied is False
    assert [h.kind for h in store.history("r-1")] == ["run.started"]


def test_decisions_come_back_in_the_order_recorded(store: Store) -> None:
    current = create(store, "r-1")
    first = {"decision_id": "d-1", "policy": "p", "outcome": "approve", "step": "check"}
    second = {"decision_id": "d-0", "policy": "p", "outcome": "reject", "reasons": ["x"]}
    advance(store, current, decisions=[first])
    advance(store, current, decisions=[second])
    assert store.decisions("r-1") == [first, second]
    assert store.decisions("r-2") == []
