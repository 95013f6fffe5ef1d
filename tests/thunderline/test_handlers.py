"""Each handler and its compensation against the simulated world, called with the
context the engine would give them; every test looks at the world afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import thunderline.handlers as thunderline_handlers
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep
from concordia.errors import PermanentError, RetryableError
from concordia.registry import Registry
from tests.conftest import DEFINITIONS, POLICIES
from tests.thunderline.conftest import (
    FakeItemCompensationContext,
    FakeItemContext,
    FakeStepContext,
    undo_of,
)
from thunderline.handlers import (
    ACTIONS,
    COMPENSATIONS,
    DB_ENV,
    EARLIER_VERSIONS,
    FAULT_POINTS,
    ThunderlineHandlers,
    build_registry,
)
from thunderline.systems.errors import Rejected
from thunderline.world import World


def act(fn: Callable[[Any], dict[str, Any]], ctx: FakeStepContext) -> dict[str, Any]:
    """Call an action the way the engine journals it: the result must survive JSON."""
    result = fn(ctx)
    assert json.loads(json.dumps(result)) == result
    return result


def item_ctx(run: Run, adapter_id: str, index: int) -> FakeItemContext:
    """Item ``index`` of the adapter fan-out, as the engine builds its context."""
    return FakeItemContext(step="sync_adapters", input=run.input, results=dict(run.results),
                           run_id=run.run_id, saga=run.saga,
                           correlation_id=run.correlation_id,
                           idempotency_key=f"{run.run_id}:sync_adapters:{index}",
                           item=adapter_id, index=index, vars={"adapter": adapter_id})


def item_undo(run: Run, adapter_id: str, index: int, result: Any,
              checkpoint: Any = None) -> FakeItemCompensationContext:
    """The compensation context of that item: its result, or its checkpoint."""
    return FakeItemCompensationContext(
        step="sync_adapters", result=result if result is not None else checkpoint,
        checkpoint_data=checkpoint, completed=result is not None, input=run.input,
        run_id=run.run_id, saga=run.saga,
        idempotency_key=f"{run.run_id}:sync_adapters:{index}:compensate", item=adapter_id,
        index=index, vars={"adapter": adapter_id})


class Run:
    """The steps of one saga run: shared run id, correlation id, input and results."""

    def __init__(self, saga: str, input: dict[str, Any]) -> None:
        self.run_id = str(uuid.uuid4())
        self.saga = saga
        self.input = input
        self.results: dict[str, Any] = {}
        self.correlation_id = f"corr-{uuid.uuid4()}"

    def ctx(self, step: str) -> FakeStepContext:
        return FakeStepContext(step=step, input=self.input, results=dict(self.results),
                               run_id=self.run_id, saga=self.saga,
                               correlation_id=self.correlation_id)

    def step(self, name: str, fn: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        ctx = self.ctx(name)
        result = act(fn, ctx)
        self.results[name] = result
        return result


# --- binding -------------------------------------------------------------------------


def test_registry_binds_exactly_the_handlers_the_sagas_name(world: World) -> None:
    registry = build_registry(world)
    catalog = Catalog.load([DEFINITIONS, POLICIES], handlers=registry)
    assert catalog.problems == []
    actions, compensations = set(), set()
    for saga in catalog.sagas.values():
        for step in saga.steps:
            if isinstance(step, ActionStep):
                actions.add(step.action)
                if step.compensate is not None:
                    compensations.add(step.compensate)
    # Besides these, only the handlers runs of earlier saga versions still call.
    assert set(registry.action_names()) - set(EARLIER_VERSIONS) == actions
    assert set(registry.compensation_names()) - set(EARLIER_VERSIONS) == compensations
    assert set(EARLIER_VERSIONS) <= set(registry.action_names()) | set(
        registry.compensation_names())


def test_every_handler_has_a_fault_point_in_the_world(world: World) -> None:
    assert set(FAULT_POINTS) == set(ACTIONS) | set(COMPENSATIONS)
    assert set(FAULT_POINTS.values()) <= set(world.operations)


def test_module_registry_opens_its_world_on_first_use(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert isinstance(thunderline_handlers.registry, Registry)
    path = tmp_path / "thunderline.db"
    monkeypatch.setenv(DB_ENV, str(path))
    monkeypatch.setattr(thunderline_handlers, "_default", None)
    assert not path.exists()
    create = thunderline_handlers.registry.get_action("thunderbolt.create_model_run").fn
    result = create(FakeStepContext(step="create_run", input={
        "search_space": "s", "dataset": "d", "trials": 1}))
    world = thunderline_handlers.default_world()
    try:
        assert world.path == str(path)
        assert world.models.run(result["run_id"]).status == "pending"
    finally:
        world.close()
    with World(path) as reopened:
        assert [r.run_id for r in reopened.models.runs()] == [result["run_id"]]


def test_external_failures_become_retryable_or_permanent(
        world: World, handlers: ThunderlineHandlers) -> None:
    snapshot_id = world.upm.create_snapshot(0.1)
    ctx = FakeStepContext(step="load_snapshot", input={"snapshot_id": snapshot_id})
    world.fail_next("upm.load")
    with pytest.raises(RetryableError):
        handlers.load_snapshot(ctx)
    world.fail_next("upm.load", error=Rejected("upm", "forbidden"))
    with pytest.raises(PermanentError, match="forbidden"):
        handlers.load_snapshot(ctx)
    with pytest.raises(PermanentError, match=r"input\.snapshot_id"):
        handlers.load_snapshot(FakeStepContext(step="load_snapshot"))


# --- user_provisioning ---------------------------------------------------------------

USER = {"email": "ada@example.com", "display_name": "Ada",
        "redirect": "https://app.example/welcome"}


def provision(handlers: ThunderlineHandlers) -> Run:
    run = Run("user_provisioning", dict(USER))
    run.step("validate_email", handlers.validate_email)
    run.step("create_user", handlers.create_user)
    run.step("generate_magic_link", handlers.issue_magic_token)
    run.step("send_magic_link", handlers.send_magic_link)
    run.step("provision_vault", handlers.provision_vault)
    run.step("create_default_community", handlers.add_community_membership)
    return run


def test_user_provisioning_happy_path(world: World, handlers: ThunderlineHandlers) -> None:
    run = provision(handlers)
    user_id = run.results["create_user"]["user_id"]
    assert uuid.UUID(user_id)
    assert world.link.user(user_id).email == "ada@example.com"
    assert uuid.UUID(run.results["provision_vault"]["vault_id"])
    assert [v.vault_id for v in world.block.vaults(user_id)] == [
        run.results["provision_vault"]["vault_id"]]
    [membership] = world.link.memberships(user_id)
    assert membership.community_id == world.link.default_community().community_id
    assert "token" not in json.dumps(run.results["generate_magic_link"]).replace("token_id", "")
    assert world.check_invariants() == []


def test_gap_004_correlation_id_reaches_the_sender_and_its_telemetry(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = provision(handlers)
    [sent] = world.gate.outbox(run.correlation_id)
    assert sent.message_id == run.results["send_magic_link"]["message_id"]
    assert sent.to_email == "ada@example.com"
    assert sent.link.startswith("https://app.example/welcome?token=")
    [record] = world.gate.telemetry(run.correlation_id)
    assert (record.name, record.attributes["message_id"]) == ("magic_link.sent",
                                                              sent.message_id)


def test_a_failed_send_is_traced_by_correlation_id(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = Run("user_provisioning", dict(USER))
    run.step("create_user", handlers.create_user)
    run.step("generate_magic_link", handlers.issue_magic_token)
    world.fail_next("thundergate.send_magic_link")
    with pytest.raises(RetryableError):
        handlers.send_magic_link(run.ctx("send_magic_link"))
    assert [r.name for r in world.gate.telemetry(run.correlation_id)] == ["magic_link.failed"]
    # The retry (same idempotency key) sends exactly one email.
    ctx = run.ctx("send_magic_link")
    first = act(handlers.send_magic_link, ctx)
    assert act(handlers.send_magic_link, ctx.retry()) == first
    assert len(world.gate.outbox(run.correlation_id)) == 1


def test_user_provisioning_compensations_undo_everything(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = provision(handlers)
    user_id = run.results["create_user"]["user_id"]
    token_id = run.results["generate_magic_link"]["token_id"]
    undo = [("create_default_community", handlers.remove_community_membership),
            ("provision_vault", handlers.delete_vault),
            ("generate_magic_link", handlers.revoke_magic_token),
            ("create_user", handlers.delete_user)]
    for _ in range(2):  # a compensation may be retried: the second pass is harmless
        for step, compensate in undo:
            compensate(undo_of(run.ctx(step), run.results[step]))
    assert world.link.memberships() == []
    assert world.block.vaults() == []
    assert world.gate.token(token_id).status == "revoked"
    assert world.link.users() == []
    assert world.check_invariants() == []
    with pytest.raises(Rejected):
        world.link.user(user_id)


def test_gap_003_membership_removed_leaves_no_orphan(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = provision(handlers)
    membership_id = run.results["create_default_community"]["membership_id"]
    removed = handlers.remove_community_membership(
        undo_of(run.ctx("create_default_community"), run.results["create_default_community"]))
    assert removed == {"membership_id": membership_id, "removed": True}
    handlers.delete_vault(undo_of(run.ctx("provision_vault"), run.results["provision_vault"]))
    handlers.delete_user(undo_of(run.ctx("create_user"), run.results["create_user"]))
    assert world.orphan_memberships() == []
    assert world.db.scalar("SELECT COUNT(*) FROM thunderlink_memberships") == 0


def test_validate_email_refuses_malformed_or_taken_addresses(
        world: World, handlers: ThunderlineHandlers) -> None:
    with pytest.raises(PermanentError, match="not a valid email"):
        handlers.validate_email(FakeStepContext(step="validate_email",
                                                input={"email": "nobody"}))
    provision(handlers)
    with pytest.raises(PermanentError, match="already exists"):
        handlers.validate_email(FakeStepContext(step="validate_email", input=dict(USER)))


@pytest.mark.parametrize(("step", "action", "operation", "compensation", "leftover"), [
    ("create_user", "create_user", "thunderlink.create_user", "delete_user",
     lambda w: w.link.users()),
    ("generate_magic_link", "issue_magic_token", "thundergate.issue_token",
     "revoke_magic_token", lambda w: [t for t in w.gate.tokens() if t.status == "issued"]),
    ("provision_vault", "provision_vault", "thunderblock.provision_vault", "delete_vault",
     lambda w: w.block.vaults()),
    ("create_default_community", "add_community_membership", "thunderlink.add_membership",
     "remove_community_membership", lambda w: w.link.memberships()),
])
def test_a_lost_response_is_compensated_from_the_checkpoint(
        world: World, handlers: ThunderlineHandlers, step: str, action: str,
        operation: str, compensation: str, leftover: Callable[[World], list[Any]]) -> None:
    # The system did the work, but the step saw a failure and never journaled a result:
    # the checkpoint taken before the call is all the compensation gets.
    run = Run("user_provisioning", dict(USER))
    if step != "create_user":
        run.step("create_user", handlers.create_user)
    world.fail_next(operation, after=1)
    ctx = run.ctx(step)
    with pytest.raises(RetryableError):
        getattr(handlers, action)(ctx)
    assert leftover(world)
    getattr(handlers, compensation)(undo_of(ctx))
    assert leftover(world) == []


# --- upm_activation ------------------------------------------------------------------


def activation(world: World, adapters: int = 3) -> tuple[str, str, Run]:
    base = world.ensure_upm_baseline(adapters=adapters)
    new = world.upm.create_snapshot(0.12, shadow_validated=True)
    return base, new, Run("upm_activation", {"snapshot_id": new})


def test_load_snapshot_reports_what_the_policy_needs(
        world: World, handlers: ThunderlineHandlers) -> None:
    base, new, run = activation(world, adapters=4)
    assert run.step("load_snapshot", handlers.load_snapshot) == {
        "snapshot_id": new, "drift_score": 0.12, "shadow_validated": True, "adapter_count": 4,
        "adapters": world.block.adapter_ids()}  # what the fan-out runs over, in order
    with pytest.raises(PermanentError, match="only a shadow snapshot"):
        handlers.load_snapshot(FakeStepContext(step="load_snapshot",
                                               input={"snapshot_id": base}))


def test_upm_activation_happy_path_and_full_rollback(
        world: World, handlers: ThunderlineHandlers) -> None:
    base, new, run = activation(world)
    before = world.adapter_snapshots()
    run.step("load_snapshot", handlers.load_snapshot)
    run.step("mark_activating", handlers.mark_snapshot_activating)
    synced = run.step("sync_adapters", handlers.sync_adapters)
    activated = run.step("activate_snapshot", handlers.activate_snapshot)
    assert synced["adapter_count"] == 3
    assert synced["previous"] == before
    stamp = datetime.fromisoformat(activated["activated_at"])
    assert stamp.utcoffset() == timedelta(0)
    assert world.upm.active_snapshot() == world.upm.snapshot(new)
    assert world.upm.snapshot(base).status == "retired"
    assert set(world.adapter_snapshots().values()) == {new}
    assert world.check_invariants() == []

    for _ in range(2):
        handlers.deactivate_snapshot(undo_of(run.ctx("activate_snapshot"), activated))
        handlers.restore_adapters(undo_of(run.ctx("sync_adapters"), synced))
        handlers.mark_snapshot_shadow(
            undo_of(run.ctx("mark_activating"), run.results["mark_activating"]))
    assert world.adapters_not_on(before) == {}
    assert world.upm.snapshot(base).status == "active"
    assert world.upm.snapshot(new).status == "shadow"
    assert world.check_invariants() == []


def test_gap_002_sync_failing_midway_is_restored_from_its_checkpoint(
        world: World, handlers: ThunderlineHandlers) -> None:
    _, _, run = activation(world, adapters=4)
    before = world.adapter_snapshots()
    run.step("mark_activating", handlers.mark_snapshot_activating)
    world.fail_next("thunderblock.sync_adapters", after=2)
    ctx = run.ctx("sync_adapters")
    with pytest.raises(RetryableError):
        handlers.sync_adapters(ctx)
    moved = world.adapters_not_on(before)
    assert len(moved) == 2
    # Each adapter's previous snapshot was checkpointed before it was changed.
    assert ctx.checkpoint_data["previous"] == {a: before[a] for a in moved}
    assert len(ctx.checkpoints) == 2
    restored = handlers.restore_adapters(undo_of(ctx))
    assert sorted(restored["restored"]) == sorted(moved)
    handlers.mark_snapshot_shadow(
        undo_of(run.ctx("mark_activating"), run.results["mark_activating"]))
    assert world.adapters_not_on(before) == {}
    assert world.check_invariants() == []


def test_gap_002_retried_sync_then_later_failure_restores_every_adapter(
        world: World, handlers: ThunderlineHandlers) -> None:
    _, new, run = activation(world, adapters=3)
    before = world.adapter_snapshots()
    run.step("mark_activating", handlers.mark_snapshot_activating)
    world.fail_next("thunderblock.sync_adapters", after=1)
    ctx = run.ctx("sync_adapters")
    with pytest.raises(RetryableError):
        handlers.sync_adapters(ctx)
    synced = act(handlers.sync_adapters, ctx.retry())
    assert synced["previous"] == before  # not the snapshot the first attempt had set
    run.results["sync_adapters"] = synced
    world.fail_next("upm.activate")
    with pytest.raises(RetryableError):
        handlers.activate_snapshot(run.ctx("activate_snapshot"))
    assert world.upm.snapshot(new).status == "activating"
    handlers.restore_adapters(undo_of(run.ctx("sync_adapters"), synced))
    handlers.mark_snapshot_shadow(
        undo_of(run.ctx("mark_activating"), run.results["mark_activating"]))
    assert world.adapters_not_on(before) == {}
    assert world.check_invariants() == []


def test_gap_002_each_adapter_is_synced_and_restored_on_its_own(
        world: World, handlers: ThunderlineHandlers) -> None:
    _, new, run = activation(world, adapters=3)
    before = world.adapter_snapshots()
    first, second, third = world.block.adapter_ids()
    synced = act(handlers.sync_adapter, item_ctx(run, first, 0))
    assert synced == {"snapshot_id": new, "adapter_id": first, "previous": before[first]}
    # The next adapter's sync dies after its change: its checkpoint says where it was.
    world.fail_next("thunderblock.sync_adapter", after=1)
    ctx = item_ctx(run, second, 1)
    with pytest.raises(RetryableError):
        handlers.sync_adapter(ctx)
    assert ctx.checkpoint_data == {"snapshot_id": new, "adapter_id": second,
                                   "previous": before[second]}
    assert world.adapters_not_on(before).keys() == {first, second}
    # Each undone by its own compensation, with its own record; the third never moved.
    assert handlers.restore_adapter(item_undo(run, second, 1, None, ctx.checkpoint_data)
                                    ) == {"adapter_id": second, "restored": True}
    assert handlers.restore_adapter(item_undo(run, first, 0, synced)) == {
        "adapter_id": first, "restored": True}
    assert handlers.restore_adapter(item_undo(run, third, 2, None, None)) == {
        "adapter_id": third, "restored": False}
    assert handlers.restore_adapter(item_undo(run, first, 0, synced))["restored"] is False
    assert world.adapters_not_on(before) == {}


def test_restore_adapters_failing_restores_none_and_can_be_retried(
        world: World, handlers: ThunderlineHandlers) -> None:
    _, new, run = activation(world, adapters=3)
    before = world.adapter_snapshots()
    synced = run.step("sync_adapters", handlers.sync_adapters)
    world.fail_next("thunderblock.restore_adapters", after=2)
    undo = undo_of(run.ctx("sync_adapters"), synced)
    with pytest.raises(RetryableError):
        handlers.restore_adapters(undo)
    assert set(world.adapter_snapshots().values()) == {new}
    handlers.restore_adapters(undo)
    assert world.adapters_not_on(before) == {}


def test_activate_refuses_while_adapters_lag(
        world: World, handlers: ThunderlineHandlers) -> None:
    _, new, run = activation(world)
    run.step("mark_activating", handlers.mark_snapshot_activating)
    with pytest.raises(PermanentError, match="adapters not on snapshot"):
        handlers.activate_snapshot(run.ctx("activate_snapshot"))
    assert world.upm.snapshot(new).status == "activating"


# --- cerebros_nas --------------------------------------------------------------------

NAS = {"search_space": "cnn-small", "trials": 4, "dataset": "cifar10"}


def nas_until_dispatched(handlers: ThunderlineHandlers) -> Run:
    run = Run("cerebros_nas", dict(NAS))
    run.step("create_run", handlers.create_model_run)
    run.step("dispatch_training", handlers.dispatch_training)
    return run


def test_nas_happy_path_persists_the_best_model_with_its_frontier(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    run_id = run.results["create_run"]["run_id"]
    assert uuid.UUID(run_id)
    assert world.models.run(run_id).status == "training"
    job_ids = run.results["dispatch_training"]["job_ids"]
    assert [j.job_id for j in world.running_jobs(run_id)] == job_ids
    # The bridge reports completion later, from outside the saga; the await journals it.
    run.results["await_completion"] = world.cerebros.complete_run(run_id)
    persisted = run.step("persist_version", handlers.persist_model_version)
    version = world.models.version(persisted["model_version_id"])
    candidates = run.results["await_completion"]["candidates"]
    best = max(candidates, key=lambda c: c["score"])
    assert (version.run_id, version.model_id, version.status) == (run_id, best["model_id"],
                                                                  "active")
    assert persisted["score"] == best["score"] == version.score
    frontier = version.metadata["pareto_frontier"]
    assert best in frontier
    for point in frontier:  # nothing in the search beats a frontier point on both counts
        assert not any(c["score"] >= point["score"] and c["params"] <= point["params"]
                       and c != point for c in candidates)
    assert world.models.run(run_id).status == "completed"
    assert world.running_jobs() == []
    assert world.check_invariants() == []


def test_dispatch_retried_with_the_same_key_finds_the_same_jobs(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = Run("cerebros_nas", dict(NAS))
    run.step("create_run", handlers.create_model_run)
    ctx = run.ctx("dispatch_training")
    first = act(handlers.dispatch_training, ctx)
    again = act(handlers.dispatch_training, ctx.retry())
    assert first == again
    assert len(world.cerebros.jobs(run.results["create_run"]["run_id"])) == NAS["trials"]


def test_gap_001_dispatch_failing_midway_is_cancelled_from_its_checkpoint(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = Run("cerebros_nas", dict(NAS))
    run.step("create_run", handlers.create_model_run)
    world.fail_next("cerebros.dispatch", after=2)
    ctx = run.ctx("dispatch_training")
    with pytest.raises(RetryableError):
        handlers.dispatch_training(ctx)
    run_id = run.results["create_run"]["run_id"]
    running = [j.job_id for j in world.running_jobs(run_id)]
    assert len(running) == 2
    assert ctx.checkpoint_data["job_ids"] == running
    cancelled = handlers.cancel_training(undo_of(ctx))
    assert cancelled["cancelled"] == running
    handlers.fail_model_run(undo_of(run.ctx("create_run"), run.results["create_run"]))
    assert world.running_jobs() == []
    assert world.models.run(run_id).status == "failed"
    assert world.check_invariants() == []


def test_gap_001_already_finished_jobs_are_fine(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    a, b, c, d = run.results["dispatch_training"]["job_ids"]
    world.cerebros.start()
    world.cerebros.fail_job(d, "node lost")
    undo = undo_of(run.ctx("dispatch_training"), run.results["dispatch_training"])
    world.fail_next("cerebros.cancel", after=1)  # the first cancel happens, then fails
    with pytest.raises(RetryableError):
        handlers.cancel_training(undo)
    assert world.cerebros.job(a).status == "cancelled"
    # Cancelling again is harmless; a job that failed on its own needs no cancelling.
    assert handlers.cancel_training(undo) == {
        "cancelled": [a, b, c], "already_finished": {d: "failed"}}
    assert world.running_jobs() == []


def test_gap_007_await_timeout_cancels_every_job_even_completed_ones_stay(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    run_id = run.results["create_run"]["run_id"]
    world.cerebros.complete_run(run_id)  # finished, but the event never reached the saga
    result = handlers.cancel_training(
        undo_of(run.ctx("dispatch_training"), run.results["dispatch_training"]))
    assert result["cancelled"] == []
    assert set(result["already_finished"].values()) == {"completed"}
    assert {j.status for j in world.cerebros.jobs(run_id)} == {"completed"}
    handlers.fail_model_run(undo_of(run.ctx("create_run"), run.results["create_run"]))
    assert world.check_invariants() == []


def test_gap_005_persisted_version_is_retired_by_its_compensation(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    run_id = run.results["create_run"]["run_id"]
    # The awaited step may journal the whole envelope rather than its data.
    run.results["await_completion"] = {"type": "ml.training.completed",
                                       "data": world.cerebros.complete_run(run_id)}
    ctx = run.ctx("persist_version")
    persisted = act(handlers.persist_model_version, ctx)
    assert act(handlers.persist_model_version, ctx.retry()) == persisted
    assert len(world.models.versions(run_id)) == 1
    for _ in range(2):
        handlers.retire_model_version(undo_of(ctx, persisted))
    handlers.cancel_training(
        undo_of(run.ctx("dispatch_training"), run.results["dispatch_training"]))
    handlers.fail_model_run(undo_of(run.ctx("create_run"), run.results["create_run"]))
    [version] = world.models.versions(run_id)
    assert version.status == "retired"
    assert version.retired_at is not None
    assert world.models.run(run_id).status == "failed"
    assert world.check_invariants() == []


def test_persist_version_failing_after_the_write_is_retired_from_its_checkpoint(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    run_id = run.results["create_run"]["run_id"]
    run.results["await_completion"] = world.cerebros.complete_run(run_id)
    world.fail_next("models.create_version", after=1)
    ctx = run.ctx("persist_version")
    with pytest.raises(RetryableError):
        handlers.persist_model_version(ctx)
    handlers.retire_model_version(undo_of(ctx))
    assert [v.status for v in world.models.versions(run_id)] == ["retired"]


def test_persist_version_refuses_a_foreign_or_empty_completion(
        world: World, handlers: ThunderlineHandlers) -> None:
    run = nas_until_dispatched(handlers)
    run.results["await_completion"] = {"run_id": str(uuid.uuid4()), "candidates": []}
    with pytest.raises(PermanentError, match="not"):
        handlers.persist_model_version(run.ctx("persist_version"))
    run.results["await_completion"] = {"run_id": run.results["create_run"]["run_id"],
                                       "candidates": []}
    with pytest.raises(PermanentError, match="without candidates"):
        handlers.persist_model_version(run.ctx("persist_version"))
    run.results["await_completion"] = {"run_id": run.results["create_run"]["run_id"],
                                       "candidates": [{"model_id": "m", "score": "high"}]}
    with pytest.raises(PermanentError, match="malformed"):
        handlers.persist_model_version(run.ctx("persist_version"))
    assert world.models.versions() == []
