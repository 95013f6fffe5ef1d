"""Patches: a change applied where its guards hold, and nowhere else. Every guard means on
every store what :func:`concordia.store.changes.holds` says; the transitions built from
them (cancel, park, wake, checkpoint) apply as their rules say."""

from __future__ import annotations

import itertools
import random

import pytest

from concordia.runtime import transitions
from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.base import Store
from concordia.store.changes import (
    AnyOf,
    AttemptIs,
    CancelUnset,
    CompIn,
    Guard,
    NoLiveLease,
    Patch,
    RunField,
    RunIn,
    StepField,
    StepIn,
    holds,
)
from tests.store.builders import T, advance, create, item, line, step


def test_a_cancellation_makes_a_run_nobody_holds_due_now(store: Store) -> None:
    create(store, "r-1", RunStatus.WAITING, wake_at=T + 60)
    patched = store.patch(transitions.cancel_request("r-1", "stop", T))
    assert patched.applied
    assert patched.run is not None
    assert (patched.run.status, patched.run.wake_at, patched.run.rev,
            patched.run.cancel_reason) == (RunStatus.RUNNING, None, 2, "stop")
    assert patched.run == store.get_run("r-1")
    assert store.due_runs(T, 10) == ["r-1"]


def test_a_cancellation_of_an_ended_or_unknown_run_applies_nothing(store: Store) -> None:
    create(store, "done", RunStatus.COMPLETED)
    patched = store.patch(transitions.cancel_request("done", "late", T))
    assert not patched.applied
    assert patched.run is not None
    assert (patched.run.status, patched.run.cancel_reason, patched.run.rev) == (
        RunStatus.COMPLETED, None, 1)
    assert [h.kind for h in store.history("done")] == ["run.started"]
    missing = store.patch(transitions.cancel_request("nobody", "late", T))
    assert (missing.applied, missing.run) == (False, None)


def test_a_cancellation_of_a_run_whose_lease_expired_makes_it_due(store: Store) -> None:
    create(store, "r-1", RunStatus.SUSPENDED, owner="dead", expires=T - 1)
    patched = store.patch(transitions.cancel_request("r-1", "stop", T))
    assert patched.run is not None
    assert (patched.run.status, patched.run.rev) == (RunStatus.RUNNING, 2)


@pytest.mark.parametrize(("owner", "expires", "parks"), [
    (None, None, True), ("me", T + 30, True), ("other", T + 30, False),
    ("other", T - 1, True)])
def test_parking_applies_unless_another_worker_holds_a_live_lease(
        store: Store, owner: str | None, expires: float | None, parks: bool) -> None:
    create(store, "r-1", owner=owner, expires=expires)
    assert store.patch(transitions.park("r-1", "me", "poison", T + 1)).applied is parks
    got = store.get_run("r-1")
    assert got is not None
    if parks:
        assert (got.status, got.error, got.lease_owner, got.lease_expires, got.rev,
                got.updated_at) == (RunStatus.STUCK, "poison", None, None, 2, T + 1)
        assert store.history("r-1")[-1].detail == {"error": "poison"}
    else:
        assert (got.status, got.rev) == (RunStatus.RUNNING, 1)
        assert len(store.history("r-1")) == 1


def test_a_childs_end_wakes_its_parents_waiting_step(store: Store) -> None:
    create(store, "parent", RunStatus.SUSPENDED, wake_at=T + 3600,
           steps=(step("child", StepStatus.AWAITING, 1, wake_at=T + 3600), step("other")))
    assert store.patch(transitions.wake("parent", "child", T + 5)).applied
    loaded = store.load("parent")
    assert loaded is not None
    assert (loaded.run.status, loaded.run.wake_at, loaded.run.rev) == (
        RunStatus.RUNNING, None, 2)
    assert loaded.steps["child"].wake_at == T + 5
    assert loaded.steps["other"] == step("other")


def test_a_childs_end_wakes_a_parent_undoing_it_too(store: Store) -> None:
    create(store, "parent", RunStatus.SUSPENDED,
           steps=(step("child", StepStatus.SUCCEEDED, 1, comp_status=CompStatus.AWAITING),))
    assert store.patch(transitions.wake("parent", "child", T + 5)).applied
    loaded = store.load("parent")
    assert loaded is not None
    assert (loaded.run.status, loaded.steps["child"].wake_at) == (RunStatus.RUNNING, T + 5)


def test_a_childs_end_leaves_an_ended_parent_and_a_step_not_waiting_alone(
        store: Store) -> None:
    create(store, "ended", RunStatus.CANCELLED, steps=(step("child", StepStatus.AWAITING),))
    assert not store.patch(transitions.wake("ended", "child", T)).applied
    loaded = store.load("ended")
    assert loaded is not None
    assert (loaded.run.status, loaded.run.rev, loaded.steps["child"].wake_at) == (
        RunStatus.CANCELLED, 1, None)
    create(store, "moved-on", RunStatus.WAITING, wake_at=T + 9,
           steps=(step("child", StepStatus.SUCCEEDED),))
    assert store.patch(transitions.wake("moved-on", "child", T)).applied  # the run is woken
    loaded = store.load("moved-on")
    assert loaded is not None
    assert (loaded.run.status, loaded.steps["child"].wake_at) == (RunStatus.RUNNING, None)


def test_a_commit_wakes_a_parent_in_its_own_transaction(store: Store) -> None:
    create(store, "parent", RunStatus.SUSPENDED, steps=(step("child", StepStatus.AWAITING),))
    child = create(store, "child-1", parent_run_id="parent", parent_step="child")
    advance(store, child, status=RunStatus.COMPLETED,
            also=[transitions.wake("parent", "child", T + 2)])
    loaded = store.load("parent")
    assert loaded is not None
    assert (loaded.run.status, loaded.run.rev, loaded.steps["child"].wake_at) == (
        RunStatus.RUNNING, 2, T + 2)


@pytest.mark.parametrize("target", ["charge", ("fan", 2)])
def test_a_checkpoint_is_kept_for_the_current_attempt_only(
        store: Store, target: str | tuple[str, int]) -> None:
    create(store, "r-1", owner="me", expires=T + 30,
           steps=(step("charge", StepStatus.RUNNING, 2), step("fan", StepStatus.RUNNING, 1)),
           items=(item("fan", 2, StepStatus.RUNNING, 2),))
    data = {"intent": "pi_1", "big": 2**62 + 1, "pi": 3.141592653589793}
    assert store.patch(transitions.checkpoint("r-1", target, 2, "me", data, T)).applied
    for attempt, owner in ((1, "me"), (3, "me"), (2, "other")):
        assert not store.patch(transitions.checkpoint("r-1", target, attempt, owner,
                                                      {"no": attempt}, T)).applied
    loaded = store.load("r-1")
    assert loaded is not None
    record = loaded.steps["charge"] if isinstance(target, str) else loaded.items[target]
    assert record.checkpoint == data
    assert list(record.checkpoint) == list(data)
    assert loaded.run.rev == 1  # a checkpoint is no new revision of the run
    shown = "charge" if isinstance(target, str) else "fan[2]"
    assert [(h.kind, h.step, h.attempt, h.detail) for h in store.history("r-1")][1:] == [
        ("step.checkpoint", shown, 2, {"data": data})]


def test_a_checkpoint_of_a_record_never_written_applies_nothing(store: Store) -> None:
    create(store, "r-1", steps=(step("fan", StepStatus.RUNNING, 1),))
    assert not store.patch(transitions.checkpoint("r-1", "nope", 1, "me", 1, T)).applied
    assert not store.patch(transitions.checkpoint("r-1", ("fan", 0), 1, "me", 1, T)).applied
    assert len(store.history("r-1")) == 1


def test_then_applies_only_after_its_patch_did(store: Store) -> None:
    create(store, "r-1", steps=(step("a", StepStatus.AWAITING),))
    second = Patch("r-1", (), run={RunField.ERROR: "second"})
    assert not store.patch(Patch("r-1", (RunIn(frozenset({RunStatus.STUCK})),), then=second,
                                 run={RunField.ERROR: "first"})).applied
    got = store.get_run("r-1")
    assert got is not None
    assert got.error is None
    patched = store.patch(Patch("r-1", (), run={RunField.ERROR: "first"}, then=second))
    assert patched.run is not None
    assert patched.run.error == "second"


# -- every guard, as holds() defines it -------------------------------------------------------

_RUNS = [
    ("free", RunStatus.RUNNING, None, None, None),
    ("mine", RunStatus.WAITING, "me", T + 30, None),
    ("theirs", RunStatus.SUSPENDED, "other", T + 30, "asked"),
    ("expired", RunStatus.RUNNING, "other", T - 5, None),
    ("over", RunStatus.COMPLETED, None, None, "asked"),
]
_RECORD = {"free": step("s", StepStatus.RUNNING, 2),
           "mine": step("s", StepStatus.AWAITING, 1, comp_status=CompStatus.RUNNING),
           "theirs": step("s", StepStatus.SUCCEEDED, 3, comp_status=CompStatus.AWAITING),
           "expired": step("s", StepStatus.WAITING_RETRY, 2),
           "over": step("s", StepStatus.FAILED, 1, comp_status=CompStatus.SUCCEEDED)}


def _guards(rng: random.Random, depth: int = 0) -> Guard:
    choice = rng.randrange(7 if depth < 2 else 6)
    if choice == 0:
        return RunIn(frozenset(rng.sample(list(RunStatus), rng.randrange(0, 4))))
    if choice == 1:
        return CancelUnset()
    if choice == 2:
        return NoLiveLease(rng.choice([None, "me", "other"]), T + rng.choice([-10, 0, 10, 40]))
    if choice == 3:
        return StepIn(frozenset(rng.sample(list(StepStatus), rng.randrange(0, 4))))
    if choice == 4:
        return CompIn(frozenset(rng.sample(list(CompStatus), rng.randrange(0, 3))))
    if choice == 5:
        return AttemptIs(rng.randrange(0, 4))
    return AnyOf(tuple(_guards(rng, depth + 1) for _ in range(rng.randrange(0, 3))))


def test_every_guard_holds_on_every_store_exactly_where_holds_says(store: Store) -> None:
    for run_id, status, owner, expires, reason in _RUNS:
        create(store, run_id, status, owner=owner, expires=expires,
               steps=(_RECORD[run_id],), cancel_reason=reason)
    rng = random.Random(20261207)
    counter = itertools.count()
    applied = 0
    for _ in range(120):
        guards = tuple(_guards(rng) for _ in range(rng.randrange(1, 3)))
        run_id = rng.choice(_RUNS)[0]
        target = rng.choice(["s", None, "missing"])
        before = store.load(run_id)
        assert before is not None
        record = before.steps.get(target) if target is not None else None
        expected = (target is None or record is not None) and all(
            holds(g, before.run, record) for g in guards)
        mark = f"m{next(counter)}"
        patch = Patch(run_id, guards, history=(line(run_id, mark),), target=target,
                      step={StepField.WAKE_AT: T + 1} if target else {})
        assert store.patch(patch).applied is expected, (guards, run_id, target)
        assert (store.history(run_id)[-1].kind == mark) is expected
        applied += expected
    assert 10 < applied < 110  # both outcomes were tried often
