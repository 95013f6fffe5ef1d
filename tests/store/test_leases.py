"""Leases and claims: an owner's leases renewed, given up or freed when it died; due runs
never another owner's live lease until it expires; claims by many workers at once never
hand two of them the same run."""

from __future__ import annotations

import threading

import pytest

from concordia.runtime import transitions
from concordia.status import RunStatus
from concordia.store.base import Claiming, Store
from tests.store.builders import T, create
from tests.store.conftest import Where


def _leases(store: Store) -> dict[str, tuple[str | None, float | None]]:
    return {r.id: (r.lease_owner, r.lease_expires) for r in store.list_runs(limit=100)}


def _holdings(store: Store) -> None:
    create(store, "a1", owner="a", expires=T + 10)
    create(store, "a2", RunStatus.WAITING, owner="a", expires=T + 10, wake_at=T + 99)
    create(store, "a-done", RunStatus.COMPLETED, owner="a", expires=T + 10)
    create(store, "b1", owner="b", expires=T + 10)
    create(store, "free")


def test_renewing_extends_only_the_owners_leases(store: Store) -> None:
    _holdings(store)
    kept = store.leases(transitions.renew("a", ["a1", "b1", "free", "nobody"], T + 40))
    assert kept == ["a1"]
    assert _leases(store)["a1"] == ("a", T + 40)
    assert _leases(store)["b1"] == ("b", T + 10)
    assert store.leases(transitions.renew("a", [], T + 40)) == []
    run = store.get_run("a1")
    assert run is not None
    assert run.rev == 1  # a lease is no new revision


def test_giving_leases_up_frees_only_the_owners(store: Store) -> None:
    _holdings(store)
    assert store.leases(transitions.release("a", ["a1", "b1"])) == ["a1"]
    leases = _leases(store)
    assert (leases["a1"], leases["b1"], leases["a2"]) == (
        (None, None), ("b", T + 10), ("a", T + 10))


def test_a_dead_owners_leases_on_active_runs_are_freed_at_once(store: Store) -> None:
    _holdings(store)
    assert sorted(store.leases(transitions.release("a", None))) == ["a1", "a2"]
    leases = _leases(store)
    assert (leases["a1"], leases["a2"], leases["b1"]) == ((None, None), (None, None),
                                                          ("b", T + 10))
    assert store.lease_holders(T) == {"b": 1}


def test_lease_holders_count_live_leases_on_active_runs(store: Store) -> None:
    _holdings(store)
    create(store, "b-expired", owner="b", expires=T - 1)
    assert store.lease_holders(T) == {"a": 2, "b": 1}
    assert store.lease_holders(T + 10) == {}


def test_due_runs_leave_out_another_owners_live_lease_until_it_expires(store: Store) -> None:
    create(store, "held", owner="b", expires=T + 10)
    create(store, "mine", owner="a", expires=T + 10)
    create(store, "free")
    create(store, "timer", RunStatus.WAITING, wake_at=T - 1)
    assert store.due_runs(T, 10, "a") == ["mine", "free", "timer"]
    assert store.due_runs(T, 10) == ["held", "mine", "free", "timer"]
    assert store.due_runs(T + 10, 10, "a") == ["held", "mine", "free", "timer"]
    # a leased running run is due again when its lease expires
    assert store.next_wake_at() == T - 1
    store.leases(transitions.release("b", None))
    store.leases(transitions.release("a", None))


def test_next_wake_at_is_the_earliest_timer_or_lease_expiry(store: Store) -> None:
    assert store.next_wake_at() is None
    create(store, "later", RunStatus.SUSPENDED, wake_at=T + 50)
    create(store, "never", RunStatus.SUSPENDED)
    create(store, "done", RunStatus.COMPLETED, wake_at=T)
    assert store.next_wake_at() == T + 50
    create(store, "retry", RunStatus.WAITING, wake_at=T + 20)
    assert store.next_wake_at() == T + 20
    create(store, "leased", owner="w", expires=T + 5)
    assert store.next_wake_at() == T + 5


# -- claims -----------------------------------------------------------------------------------


def _claiming(store: Store) -> Claiming:
    if not isinstance(store, Claiming):
        pytest.skip("the store offers no claims")
    return store


def test_a_claim_leases_due_runs_in_due_order_without_a_new_revision(store: Store) -> None:
    claiming = _claiming(store)
    create(store, "r1")
    create(store, "held", owner="b", expires=T + 10)
    create(store, "r2")
    create(store, "late-timer", RunStatus.WAITING, wake_at=T - 1)
    create(store, "early-timer", RunStatus.SUSPENDED, wake_at=T - 5)
    create(store, "future", RunStatus.WAITING, wake_at=T + 5)
    create(store, "mine", owner="a", expires=T + 1)
    got = claiming.claim_due(transitions.claim("a", T, 10, T + 30, exclude=["r2"]))
    assert got == ["r1", "mine", "early-timer", "late-timer"]
    for run_id in got:
        run = store.get_run(run_id)
        assert run is not None
        assert (run.lease_owner, run.lease_expires, run.rev) == ("a", T + 30, 1)
    assert claiming.claim_due(transitions.claim("c", T, 10, T + 30)) == ["r2"]
    assert claiming.claim_due(transitions.claim("c", T + 10, 1, T + 40)) == ["held"]


def test_claims_by_many_workers_at_once_are_disjoint_and_cover_every_due_run(
        where: Where) -> None:
    store = where.open()
    _claiming(store)
    for i in range(120):
        create(store, f"r{i:03d}")
    create(store, "held", owner="other", expires=T + 60)
    create(store, "timer", RunStatus.WAITING, wake_at=T - 1)
    create(store, "later", RunStatus.WAITING, wake_at=T + 60)
    stores = [where.open() for _ in range(4)]
    barrier = threading.Barrier(4)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}

    def claim(name: str, s: Store) -> None:
        assert isinstance(s, Claiming)
        barrier.wait()
        mine = claimed[name]
        while batch := s.claim_due(transitions.claim(name, T, 7, T + 30, exclude=mine)):
            mine.extend(batch)

    threads = [threading.Thread(target=claim, args=(name, s))
               for name, s in zip(claimed, stores, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [r for mine in claimed.values() for r in mine]
    assert len(every) == len(set(every))  # no run claimed twice
    assert set(every) == {f"r{i:03d}" for i in range(120)} | {"timer"}
    for name, mine in claimed.items():
        for run_id in mine:
            got = store.get_run(run_id)
            assert got is not None
            assert (got.lease_owner, got.lease_expires, got.rev) == (name, T + 30, 1)
