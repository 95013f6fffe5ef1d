"""The three reference sagas run by the engine over the simulated world: the happy paths,
and a failure injected at every action step in turn (before its work, and midway or
after it), each leaving the world consistent. Assertions look at the world's state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from concordia import Engine, PermanentError, VirtualClock, new_event
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep
from concordia.runtime.views import RunView
from tests.conftest import DEFINITIONS, POLICIES
from thunderline.handlers import FAULT_POINTS, build_registry
from thunderline.world import World

CATALOG = Catalog.load_strict([DEFINITIONS, POLICIES])
USER = {"email": "ada@example.com", "display_name": "Ada",
        "redirect": "https://app.example/welcome"}
NAS = {"search_space": "cnn-small", "trials": 4, "dataset": "cifar10"}
# Operations that work through several items; a failure "midway" stops after two.
MULTI_ITEM = {"cerebros.dispatch"}


@dataclass
class Harness:
    world: World
    engine: Engine
    clock: VirtualClock

    def run(self, saga: str, input: dict[str, Any]) -> RunView:
        started = self.engine.start(saga, input)
        self.engine.drain(max_wait=60)
        return self.engine.get_run(started.id)

    def complete_training(self, view: RunView) -> RunView:
        """The bridge's completion callback, arriving from outside the saga."""
        payload = self.world.cerebros.complete_run(view.results["create_run"]["run_id"])
        self.engine.deliver(new_event("ml.training.completed", payload,
                                      source="urn:thunderline:cerebros"))
        self.engine.drain(max_wait=60)
        return self.engine.get_run(view.id)


@pytest.fixture
def harness(world: World) -> Iterator[Harness]:
    clock = VirtualClock()
    engine = Engine(CATALOG, build_registry(world), "memory://", clock=clock)
    yield Harness(world, engine, clock)
    engine.close()


def compensated(view: RunView) -> list[str]:
    return [h.step for h in view.history if h.kind == "compensation.succeeded" and h.step]


def event(view: RunView, type: str) -> dict[str, Any]:
    [found] = [e for e in view.events if e["type"] == type]
    assert found["correlationid"] == view.correlation_id
    return found


def failure_plans(saga: str) -> list[tuple[str, str, int]]:
    """(step, world operation, after) for every action step: before and after its work."""
    plans = []
    for step in CATALOG.saga(saga).steps:
        if isinstance(step, ActionStep):
            operation = FAULT_POINTS[step.action]
            plans.append((step.name, operation, 0))
            plans.append((step.name, operation, 2 if operation in MULTI_ITEM else 1))
    return plans


# --- user_provisioning ---------------------------------------------------------------


def test_user_provisioning_happy_path(harness: Harness) -> None:
    view = harness.run("user_provisioning", dict(USER))
    world = harness.world
    assert view.status == "completed"
    [user] = world.link.users()
    [vault] = world.block.vaults(user.user_id)
    [membership] = world.link.memberships(user.user_id)
    assert membership.community_id == world.link.default_community().community_id
    done = event(view, "user.onboarding.complete")["data"]
    assert done == {"user_id": user.user_id, "email": USER["email"], "vault_id": vault.vault_id}
    # GAP-004: the run's correlation id is on the email and in the sender's telemetry.
    [sent] = world.gate.outbox(view.correlation_id)
    assert sent.to_email == USER["email"]
    assert [r.name for r in world.gate.telemetry(view.correlation_id)] == ["magic_link.sent"]
    assert world.check_invariants() == []


@pytest.mark.parametrize(("step", "operation", "after"), failure_plans("user_provisioning"))
def test_user_provisioning_failing_anywhere_leaves_nothing_behind(
        harness: Harness, step: str, operation: str, after: int) -> None:
    world = harness.world
    world.fail_next(operation, after=after, error=PermanentError)
    view = harness.run("user_provisioning", dict(USER))
    assert view.status in ("compensated", "failed")
    assert view.step(step).status == "failed"
    assert world.link.users() == []
    assert world.block.vaults() == []
    assert world.link.memberships() == []  # GAP-003
    assert [t for t in world.gate.tokens() if t.status == "issued"] == []
    assert world.check_invariants() == []
    event(view, "user.provisioning.failed")


# --- upm_activation ------------------------------------------------------------------


def test_upm_activation_happy_path(harness: Harness) -> None:
    world = harness.world
    base = world.ensure_upm_baseline(adapters=3)
    new = world.upm.create_snapshot(0.1)
    view = harness.run("upm_activation", {"snapshot_id": new})
    assert view.status == "completed"
    assert world.upm.active_snapshot() == world.upm.snapshot(new)
    assert world.upm.snapshot(base).status == "retired"
    assert set(world.adapter_snapshots().values()) == {new}
    activated = event(view, "ai.upm.snapshot.activated")["data"]
    assert activated["adapter_count"] == 3
    assert activated["activated_at"] == world.upm.snapshot(new).activated_at
    assert world.check_invariants() == []


@pytest.mark.parametrize(("step", "operation", "after"), failure_plans("upm_activation"))
def test_upm_activation_failing_anywhere_restores_every_adapter(
        harness: Harness, step: str, operation: str, after: int) -> None:
    world = harness.world
    base = world.ensure_upm_baseline(adapters=4)
    new = world.upm.create_snapshot(0.1)
    before = world.adapter_snapshots()
    world.fail_next(operation, after=after, error=PermanentError)
    view = harness.run("upm_activation", {"snapshot_id": new})
    assert view.status in ("compensated", "failed")
    assert view.step(step).status == "failed"
    if operation == "thunderblock.sync_adapter" and after:
        # GAP-002: the adapter changed before its sync failed was checkpointed and restored.
        assert compensated(view)[0] == "sync_adapters[0]"
    assert world.adapters_not_on(before) == {}
    assert world.upm.active_snapshot() == world.upm.snapshot(base)
    assert world.upm.snapshot(new).status == "shadow"
    assert world.check_invariants() == []
    event(view, "ai.upm.activation.failed")


@pytest.mark.parametrize("failing", range(4))
@pytest.mark.parametrize("after", [0, 1])
def test_gap_002_a_failure_mid_fan_out_restores_exactly_the_adapters_it_moved(
        harness: Harness, failing: int, after: int) -> None:
    """Adapter ``failing`` fails before its change (``after=0``) or once its change is
    made (``after=1``, the response lost): each adapter moved is restored by its own
    compensation, last first, and no other adapter is touched."""
    world = harness.world
    world.ensure_upm_baseline(adapters=4)
    new = world.upm.create_snapshot(0.1)
    before = world.adapter_snapshots()
    world.fail_next("thunderblock.sync_adapter", skip=failing, after=after,
                    error=PermanentError)
    view = harness.run("upm_activation", {"snapshot_id": new})
    assert view.status == "compensated"
    moved = failing + after  # adapters whose snapshot changed before the failure
    items = [f"sync_adapters[{i}]" for i in reversed(range(moved))]
    assert compensated(view) == [*items, "mark_activating"]
    ledger = world.block.synced_by(f"{view.id}:sync_adapters:")
    ids = world.block.adapter_ids()
    assert ledger == {f"{view.id}:sync_adapters:{i}": ids[i] for i in range(moved)}
    restored = [h.step for h in view.history if h.kind == "compensation.succeeded"]
    assert restored[:moved] == items
    assert [s.name for s in view.items("sync_adapters")] == [
        f"sync_adapters[{i}]" for i in range(failing + 1)]
    assert world.adapters_not_on(before) == {}
    assert world.check_invariants() == []


@pytest.mark.parametrize(("drift", "validated"), [(0.5, True), (0.1, False)])
def test_upm_policy_rejection_changes_nothing(
        harness: Harness, drift: float, validated: bool) -> None:
    world = harness.world
    base = world.ensure_upm_baseline(adapters=2)
    before = world.adapter_snapshots()
    new = world.upm.create_snapshot(drift, shadow_validated=validated)
    view = harness.run("upm_activation", {"snapshot_id": new})
    assert view.status in ("compensated", "failed")
    assert view.step("policy_check").status == "failed"
    assert world.adapters_not_on(before) == {}
    assert world.upm.snapshot(new).status == "shadow"
    assert world.upm.active_snapshot() == world.upm.snapshot(base)
    # GAP-006: a real decision by policies/upm_activation.yaml, recorded with its reason.
    [decision] = view.decisions
    assert decision["policy"] == "upm_activation"
    assert decision["decision"] == "reject"
    assert decision["rule"] == ("drift_too_high" if drift > 0.3 else "shadow_not_validated")
    assert decision["inputs"]["drift_score"] == drift
    if drift > 0.3:
        assert decision["reason"] == f"drift {drift} exceeds the 0.3 threshold"
    assert decision["reason"] in (view.error or "")


# --- cerebros_nas --------------------------------------------------------------------


def test_nas_happy_path_persists_a_version_linked_to_its_run(harness: Harness) -> None:
    world = harness.world
    view = harness.run("cerebros_nas", dict(NAS))
    assert view.status == "suspended"  # awaiting the bridge, with no poll loop running
    run_id = view.results["create_run"]["run_id"]
    assert len(world.running_jobs(run_id)) == NAS["trials"]
    view = harness.complete_training(view)
    assert view.status == "completed"
    [version] = world.models.versions(run_id)
    assert version.status == "active"
    assert version.metadata["pareto_frontier"]
    assert world.models.run(run_id).status == "completed"
    done = event(view, "ml.run.completed")["data"]
    assert done == {"run_id": run_id, "model_version_id": version.model_version_id,
                    "score": version.score}
    assert world.running_jobs() == []
    assert world.check_invariants() == []


@pytest.mark.parametrize(("step", "operation", "after"), failure_plans("cerebros_nas"))
def test_nas_failing_anywhere_leaves_no_job_running(
        harness: Harness, step: str, operation: str, after: int) -> None:
    world = harness.world
    world.fail_next(operation, after=after, error=PermanentError)
    view = harness.run("cerebros_nas", dict(NAS))
    if view.status == "suspended":
        view = harness.complete_training(view)
    assert view.status in ("compensated", "failed")
    assert view.step(step).status == "failed"
    if operation == "cerebros.dispatch" and after:
        # GAP-001: the two jobs dispatched before the failure were cancelled.
        assert "dispatch_training" in compensated(view)
        assert [j.status for j in world.cerebros.jobs()] == ["cancelled", "cancelled"]
    assert world.running_jobs() == []
    assert {r.status for r in world.models.runs()} <= {"failed"}
    assert [v for v in world.models.versions() if v.status == "active"] == []
    assert world.check_invariants() == []


def test_nas_await_timeout_cancels_the_jobs(harness: Harness) -> None:
    world = harness.world
    view = harness.run("cerebros_nas", dict(NAS))
    run_id = view.results["create_run"]["run_id"]
    harness.clock.advance(6 * 3600 + 1)
    harness.engine.drain(max_wait=60)
    view = harness.engine.get_run(view.id)
    assert view.status == "compensated"
    assert compensated(view) == ["dispatch_training", "create_run"]
    assert {j.status for j in world.cerebros.jobs(run_id)} == {"cancelled"}
    assert world.models.run(run_id).status == "failed"
    assert event(view, "ml.run.failed")["data"]["run_id"] == run_id
    assert world.check_invariants() == []


# --- causation (DRIFT-004) -------------------------------------------------------------


def test_every_saga_event_carries_the_causation_of_what_triggered_it(
        harness: Harness) -> None:
    world = harness.world
    trigger = new_event("ml.nas.requested", dict(NAS), source="urn:thunderline:console",
                        version=1, correlation_id="req-42")
    [run_id] = harness.engine.deliver(trigger).started
    harness.engine.drain(max_wait=60)
    view = harness.engine.get_run(run_id)
    dispatched = event(view, "ml.training.dispatched")
    assert view.correlation_id == "req-42"
    assert dispatched["causationid"] == trigger.id
    payload = world.cerebros.complete_run(view.results["create_run"]["run_id"])
    callback = new_event("ml.training.completed", payload, source="urn:thunderline:cerebros",
                         version=1, correlation_id="req-42")
    harness.engine.deliver(callback)
    harness.engine.drain(max_wait=60)
    view = harness.engine.get_run(run_id)
    completed = event(view, "ml.run.completed")
    # After the await, the bridge's callback is the cause; the chain leads back to it.
    assert completed["causationid"] == callback.id
    chain = harness.engine.causation_chain(completed["id"])
    assert [e["id"] for e in chain] == [callback.id, completed["id"]]
    assert [e["id"] for e in harness.engine.causation_chain(dispatched["id"])] == [
        trigger.id, dispatched["id"]]
