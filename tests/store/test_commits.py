"""Commits: a run's transitions are written whole at the revision their writer read, or not
at all; a cancellation asked for meanwhile is kept and handed back."""

from __future__ import annotations

from typing import Any

import pytest

from concordia.errors import StoreError
from concordia.runtime import transitions
from concordia.status import RunStatus, StepStatus
from concordia.store.base import Batching, ConflictError, Store
from concordia.store.changes import Commit
from tests.store.builders import T, advance, create, item, line, run, step
from tests.store.conftest import Where


def test_a_created_run_reads_back_with_its_records_at_revision_one(store: Store) -> None:
    made = create(store, "r-1", steps=(step("a"), step("b", StepStatus.READY)),
                  items=(item("fan", 0), item("fan", 1, StepStatus.RUNNING, 1)),
                  parent_run_id="p-1", parent_step="child")
    assert made.rev == 1
    loaded = store.load("r-1")
    assert loaded is not None
    assert loaded.run == made
    assert loaded.steps == {"a": step("a"), "b": step("b", StepStatus.READY)}
    assert loaded.items == {("fan", 0): item("fan", 0),
                            ("fan", 1): item("fan", 1, StepStatus.RUNNING, 1)}
    assert store.get_run("r-1") == made
    assert [h.kind for h in store.history("r-1")] == ["run.started"]


def test_a_taken_id_is_refused_and_the_run_left_as_it_was(store: Store) -> None:
    create(store, "r-1", steps=(step("a"),))
    with pytest.raises(ConflictError):
        store.create(Commit(run=run("r-1", RunStatus.WAITING), steps=[step("z")],
                            history=[line("r-1", "again")]))
    loaded = store.load("r-1")
    assert loaded is not None
    assert (loaded.run.status, list(loaded.steps)) == (RunStatus.RUNNING, ["a"])
    assert [h.kind for h in store.history("r-1")] == ["run.started"]


def test_a_commit_writes_its_changes_and_moves_the_revision_on(store: Store) -> None:
    current = create(store, "r-1", steps=(step("a"), step("b")))
    done = step("a", StepStatus.SUCCEEDED, 1, result={"ok": [1, 2]}, started_at=T,
                finished_at=T + 1)
    advance(store, current, state="run_1", steps=[done], items=[item("b", 3)],
            history=[line("r-1", "step.succeeded", "a")], error="none", compensated_any=True,
            lease_owner="w", lease_expires=T + 30)
    assert current.rev == 2
    loaded = store.load("r-1")
    assert loaded is not None
    assert loaded.run == current
    assert loaded.steps == {"a": done, "b": step("b")}
    assert loaded.items == {("b", 3): item("b", 3)}
    assert [h.kind for h in store.history("r-1")] == ["run.started", "step.succeeded"]


def test_a_stale_or_unknown_commit_is_refused_and_writes_nothing(store: Store) -> None:
    current = create(store, "r-1", steps=(step("a"),))
    stale = Commit(run=run("r-1", RunStatus.WAITING, wake_at=T), expect_rev=7,
                   steps=[step("a", StepStatus.FAILED)], items=[item("a", 0)],
                   history=[line("r-1", "stale")],
                   events=[{"envelope": envelope("e-1"), "persistent": True}])
    with pytest.raises(ConflictError):
        store.commit(stale)
    with pytest.raises(ConflictError):
        store.commit(Commit(run=run("nobody"), expect_rev=1))
    loaded = store.load("r-1")
    assert loaded is not None
    assert loaded.run == current
    assert loaded.steps == {"a": step("a")}
    assert loaded.items == {}
    assert [h.kind for h in store.history("r-1")] == ["run.started"]
    assert store.outbox_pending(10) == []
    assert store.get_run("nobody") is None


def test_a_commit_that_fails_midway_leaves_nothing(where: Where) -> None:
    store = where.open()
    current = create(store, "r-1", steps=(step("a"),))
    where.break_table("outbox")
    with pytest.raises(StoreError):
        advance(store, current, state="run_1", steps=[step("a", StepStatus.SUCCEEDED, 1)],
                history=[line("r-1", "step.succeeded", "a")],
                events=[{"envelope": envelope("e-1"), "persistent": True}])
    loaded = store.load("r-1")
    assert loaded is not None
    assert (loaded.run.rev, loaded.run.state) == (1, "run_0")
    assert loaded.steps == {"a": step("a")}
    assert [h.kind for h in store.history("r-1")] == ["run.started"]
    assert store.get_event("e-1") is None
    assert store.run_events("r-1") == []


def test_a_cancellation_asked_meanwhile_is_kept_and_handed_back(store: Store) -> None:
    current = create(store, "r-1", owner="w", expires=T + 30)
    asked = store.patch(transitions.cancel_request("r-1", "customer left", T))
    assert asked.applied
    assert asked.run is not None
    assert (asked.run.cancel_reason, asked.run.rev) == ("customer left", 1)  # leased: told later
    commit = advance(store, current, state="run_1")  # the owner's next commit
    assert commit.run.cancel_reason == "customer left"
    assert commit.run.rev == 2
    got = store.get_run("r-1")
    assert got is not None
    assert got.cancel_reason == "customer left"
    # the first reason wins: neither a second request nor a commit replaces it
    assert not store.patch(transitions.cancel_request("r-1", "changed mind", T)).applied
    advance(store, current, cancel_reason="another")
    assert current.cancel_reason == "customer left"
    got = store.get_run("r-1")
    assert got is not None
    assert got.cancel_reason == "customer left"
    assert [h.detail for h in store.history("r-1") if h.kind == "run.cancel_requested"] == [
        {"reason": "customer left"}]


def test_many_runs_commits_in_one_call_each_applied_or_refused_alone(store: Store) -> None:
    if not isinstance(store, Batching):
        pytest.skip("commit_many is a Batching store's")
    runs = [create(store, f"r-{i}", steps=(step("a"),)) for i in range(4)]
    commits = []
    for i, current in enumerate(runs):
        current.state = f"moved-{i}"
        commits.append(Commit(run=current, expect_rev=1 if i != 2 else 5,
                              steps=[step("a", StepStatus.RUNNING, i)],
                              items=[item("a", i)], history=[line(current.id, f"h{i}")]))
    store.patch(transitions.cancel_request("r-3", "stop", T))  # asked meanwhile
    commits[3].expect_rev = 2
    outcomes = store.commit_many(commits)
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None, None, "ConflictError", None]
    for i in (0, 1, 3):
        loaded = store.load(f"r-{i}")
        assert loaded is not None
        assert (loaded.run.state, loaded.run.rev) == (f"moved-{i}", 2 if i != 3 else 3)
        assert loaded.steps["a"] == step("a", StepStatus.RUNNING, i)
        assert loaded.items == {("a", i): item("a", i)}
        assert store.history(f"r-{i}")[-1].kind == f"h{i}"
    assert commits[3].run.cancel_reason == "stop"
    refused = store.load("r-2")
    assert refused is not None
    assert (refused.run.state, refused.run.rev, refused.items) == ("run_0", 1, {})


def test_a_batch_is_one_transaction_where_a_refused_or_failing_write_undoes_only_itself(
        store: Store) -> None:
    if not isinstance(store, Batching):
        pytest.skip("write_batch is a Batching store's")

    def half_then_fail(s: Store) -> None:
        s.create(Commit(run=run("half")))  # written, then undone with its write alone
        raise ValueError("handler-side failure after a write")

    stale = Commit(run=run("r1"), expect_rev=7)
    outcomes = store.write_batch([
        lambda s: s.create(Commit(run=run("r1"))),
        lambda s: s.commit(stale),
        lambda s: s.create(Commit(run=run("r1"))),  # the id is taken
        half_then_fail,
        lambda s: s.create(Commit(run=run("r2"))),
    ])
    errors = [type(e).__name__ if e else None for _, e in outcomes]
    assert errors == [None, "ConflictError", "ConflictError", "ValueError", None]
    assert [r.id for r in store.list_runs()] == ["r1", "r2"]
    assert store.get_run("half") is None


def envelope(event_id: str, kind: str = "order.placed", **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "/shop", "type": kind,
            "time": "2027-01-15T10:00:00Z", "data": {"n": 1}, **extra}
