"""The handlers of the three reference sagas, bound to the simulated Thunderline world.

``build_registry(world)`` binds every action and compensation the sagas in
``definitions/sagas`` name. The module attribute ``registry`` binds them to a default
world opened lazily (on the first handler call) at ``$THUNDERLINE_DB`` (default
``thunderline.db``), so ``--handlers thunderline.handlers`` works from the command line.

Rules every handler here follows, because they are what makes rollback trustworthy:

* Before a side effect, the handler checkpoints what its compensation will need to find
  that effect (ids known in advance, or the idempotency key the system files it under).
  A step that fails midway, even one whose work was done but whose response was lost,
  is then compensated from its checkpoint instead of leaving the effect behind.
* External calls carry the step's ``idempotency_key``, so a retry finds the first
  attempt's work instead of repeating it.
* Compensations really undo, and may run more than once: undoing what is already undone
  is success.
* A transient failure of a system becomes ``RetryableError``; a refusal, or missing
  input, becomes ``PermanentError``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from concordia import (
    CompensationContext,
    HandlerError,
    ItemCompensationContext,
    ItemContext,
    PermanentError,
    Registry,
    RetryableError,
    StepContext,
)
from thunderline.systems.errors import ExternalSystemError, Rejected, Unavailable
from thunderline.systems.models import parse_candidates
from thunderline.world import World

DB_ENV = "THUNDERLINE_DB"
DEFAULT_DB = "thunderline.db"
DEFAULT_REDIRECT = "https://thunderline.example/welcome"
_VERSION_NAMESPACE = uuid.UUID("3d0f6f0e-5a8c-4f57-8b0e-6a1d2c9e4b21")


# Each handler and the world operation its external call goes through, so a test or the
# demo can make a given step (or compensation) fail with ``world.fail_next``.
FAULT_POINTS: dict[str, str] = {
    # user_provisioning
    "thundergate.validate_email": "thundergate.check_email",
    "thunderlink.create_user": "thunderlink.create_user",
    "thunderlink.delete_user": "thunderlink.delete_user",
    "thundergate.issue_magic_token": "thundergate.issue_token",
    "thundergate.revoke_magic_token": "thundergate.revoke_token",
    "thundergate.send_magic_link": "thundergate.send_magic_link",
    "thunderblock.provision_vault": "thunderblock.provision_vault",
    "thunderblock.delete_vault": "thunderblock.delete_vault",
    "thunderlink.add_community_membership": "thunderlink.add_membership",
    "thunderlink.remove_community_membership": "thunderlink.remove_membership",
    # upm_activation
    "thunderbolt.load_snapshot": "upm.load",
    "thunderbolt.mark_snapshot_activating": "upm.mark_activating",
    "thunderbolt.mark_snapshot_shadow": "upm.mark_shadow",
    "thunderblock.sync_adapter": "thunderblock.sync_adapter",
    "thunderblock.restore_adapter": "thunderblock.restore_adapter",
    "thunderblock.sync_adapters": "thunderblock.sync_adapters",
    "thunderblock.restore_adapters": "thunderblock.restore_adapters",
    "thunderbolt.activate_snapshot": "upm.activate",
    "thunderbolt.deactivate_snapshot": "upm.deactivate",
    # cerebros_nas
    "thunderbolt.create_model_run": "models.create_run",
    "thunderbolt.fail_model_run": "models.fail_run",
    "cerebros.dispatch_training": "cerebros.dispatch",
    "cerebros.cancel_training": "cerebros.cancel",
    "thunderbolt.persist_model_version": "models.create_version",
    "thunderbolt.retire_model_version": "models.retire_version",
}


@contextmanager
def _external(what: str) -> Iterator[None]:
    """Translate a simulated system's failure into the engine's retry vocabulary."""
    try:
        yield
    except HandlerError:
        raise
    except Unavailable as error:
        raise RetryableError(f"{what}: {error}") from error
    except Rejected as error:
        raise PermanentError(f"{what}: {error}") from error
    except ExternalSystemError as error:
        raise RetryableError(f"{what}: {error}") from error


def _field(ctx: StepContext, step: str, name: str) -> Any:
    """``results.<step>.<name>``, or a permanent failure naming what is missing."""
    value = (ctx.results.get(step) or {}).get(name)
    if value is None:
        raise PermanentError(f"{ctx.step} needs results.{step}.{name}, which is missing")
    return value


def _input(ctx: StepContext, name: str) -> Any:
    value = ctx.input.get(name)
    if value is None:
        raise PermanentError(f"{ctx.step} needs input.{name}, which is missing")
    return value


def _record(ctx: CompensationContext) -> dict[str, Any]:
    """What the compensated step left for its undo: the last checkpoint, overlaid with
    the result (a completed step's result is the fuller of the two)."""
    merged: dict[str, Any] = {}
    for part in (ctx.checkpoint_data, ctx.result):
        if isinstance(part, Mapping):
            merged.update(part)
    return merged


def _created(record: Mapping[str, Any], field: str, by_key: Callable[[str], Any],
             attr: str) -> Any:
    """The id of what a step created: from its result or, when the step failed after its
    effect but before returning, looked up by the idempotency key it checkpointed first."""
    value = record.get(field)
    if value is None and record.get("idempotency_key"):
        found = by_key(record["idempotency_key"])
        value = None if found is None else getattr(found, attr)
    return value


def _awaited_data(value: Any) -> Mapping[str, Any]:
    """The awaited event's data. Accepts the data itself or a whole CloudEvents
    envelope, so the handler does not depend on which of the two is journaled."""
    if isinstance(value, Mapping):
        data = value.get("data")
        if "candidates" not in value and isinstance(data, Mapping):
            return data
        return value
    raise PermanentError("results.await_completion holds no ml.training.completed event")


class ThunderlineHandlers:
    """The handlers, over a world given directly or opened on first use."""

    def __init__(self, world: World | Callable[[], World]) -> None:
        self._world = world

    @property
    def world(self) -> World:
        return self._world if isinstance(self._world, World) else self._world()

    # --- user_provisioning ------------------------------------------------------------

    def validate_email(self, ctx: StepContext) -> dict[str, Any]:
        with _external("thundergate.validate_email"):
            email = self.world.gate.check_email(str(_input(ctx, "email")))
        if self.world.link.find_user_by_email(email) is not None:
            raise PermanentError(f"an account for {email} already exists")
        return {"email": email}

    def create_user(self, ctx: StepContext) -> dict[str, Any]:
        ctx.checkpoint({"idempotency_key": ctx.idempotency_key})
        with _external("thunderlink.create_user"):
            user_id = self.world.link.create_user(
                str(_input(ctx, "email")), str(_input(ctx, "display_name")),
                ctx.idempotency_key)
        ctx.log.info("user created", user_id=user_id)
        return {"user_id": user_id, "email": ctx.input["email"]}

    def delete_user(self, ctx: CompensationContext) -> dict[str, Any]:
        user_id = _created(_record(ctx), "user_id", self.world.link.user_for_key, "user_id")
        if user_id is None:
            return {"user_id": None, "deleted": False}
        with _external("thunderlink.delete_user"):
            deleted = self.world.link.delete_user(user_id)
        ctx.log.info("user deleted", user_id=user_id, deleted=deleted)
        return {"user_id": user_id, "deleted": deleted}

    def issue_magic_token(self, ctx: StepContext) -> dict[str, Any]:
        user_id = _field(ctx, "create_user", "user_id")
        ctx.checkpoint({"idempotency_key": ctx.idempotency_key})
        with _external("thundergate.issue_magic_token"):
            token = self.world.gate.issue_token(user_id, str(_input(ctx, "email")),
                                                ctx.idempotency_key)
        # The token's secret stays in the gate: a journal is no place for credentials.
        return {"token_id": token.token_id, "expires_at": token.expires_at}

    def revoke_magic_token(self, ctx: CompensationContext) -> dict[str, Any]:
        token_id = _created(_record(ctx), "token_id", self.world.gate.token_for_key, "token_id")
        if token_id is None:
            return {"token_id": None, "revoked": False}
        with _external("thundergate.revoke_magic_token"):
            revoked = self.world.gate.revoke_token(token_id)
        ctx.log.info("magic token revoked", token_id=token_id, revoked=revoked)
        return {"token_id": token_id, "revoked": revoked}

    def send_magic_link(self, ctx: StepContext) -> dict[str, Any]:
        token_id = _field(ctx, "generate_magic_link", "token_id")
        redirect = ctx.input.get("redirect") or DEFAULT_REDIRECT
        with _external("thundergate.send_magic_link"):
            secret = self.world.gate.token_secret(token_id)
            message_id = self.world.gate.send_magic_link(
                str(_input(ctx, "email")), secret, str(redirect),
                correlation_id=ctx.correlation_id, idempotency_key=ctx.idempotency_key)
        ctx.log.info("magic link sent", message_id=message_id)
        return {"message_id": message_id, "correlation_id": ctx.correlation_id}

    def provision_vault(self, ctx: StepContext) -> dict[str, Any]:
        user_id = _field(ctx, "create_user", "user_id")
        ctx.checkpoint({"idempotency_key": ctx.idempotency_key})
        with _external("thunderblock.provision_vault"):
            vault_id = self.world.block.provision_vault(user_id, ctx.idempotency_key)
        return {"vault_id": vault_id, "user_id": user_id}

    def delete_vault(self, ctx: CompensationContext) -> dict[str, Any]:
        vault_id = _created(_record(ctx), "vault_id", self.world.block.vault_for_key, "vault_id")
        if vault_id is None:
            return {"vault_id": None, "deleted": False}
        with _external("thunderblock.delete_vault"):
            deleted = self.world.block.delete_vault(vault_id)
        ctx.log.info("vault deleted", vault_id=vault_id, deleted=deleted)
        return {"vault_id": vault_id, "deleted": deleted}

    def add_community_membership(self, ctx: StepContext) -> dict[str, Any]:
        user_id = _field(ctx, "create_user", "user_id")
        ctx.checkpoint({"idempotency_key": ctx.idempotency_key})
        with _external("thunderlink.add_community_membership"):
            community = self.world.link.default_community()
            membership_id = self.world.link.add_membership(
                user_id, community.community_id, ctx.idempotency_key)
        return {"membership_id": membership_id, "community_id": community.community_id,
                "user_id": user_id}

    def remove_community_membership(self, ctx: CompensationContext) -> dict[str, Any]:
        membership_id = _created(_record(ctx), "membership_id",
                                 self.world.link.membership_for_key, "membership_id")
        if membership_id is None:
            return {"membership_id": None, "removed": False}
        with _external("thunderlink.remove_community_membership"):
            removed = self.world.link.remove_membership(membership_id)
        ctx.log.info("community membership removed", membership_id=membership_id,
                     removed=removed)
        return {"membership_id": membership_id, "removed": removed}

    # --- upm_activation ---------------------------------------------------------------

    def load_snapshot(self, ctx: StepContext) -> dict[str, Any]:
        snapshot_id = str(_input(ctx, "snapshot_id"))
        with _external("thunderbolt.load_snapshot"):
            snapshot = self.world.upm.load(snapshot_id)
        if snapshot.status != "shadow":
            raise PermanentError(f"snapshot {snapshot_id} is {snapshot.status}; "
                                 "only a shadow snapshot can be promoted")
        adapters = self.world.block.adapter_ids()
        return {"snapshot_id": snapshot_id, "drift_score": snapshot.drift_score,
                "shadow_validated": snapshot.shadow_validated,
                "adapter_count": len(adapters), "adapters": adapters}

    def mark_snapshot_activating(self, ctx: StepContext) -> dict[str, Any]:
        snapshot_id = str(_input(ctx, "snapshot_id"))
        ctx.checkpoint({"snapshot_id": snapshot_id})
        with _external("thunderbolt.mark_snapshot_activating"):
            before = self.world.upm.mark_activating(snapshot_id)
        return {"snapshot_id": snapshot_id, "previous_status": before}

    def mark_snapshot_shadow(self, ctx: CompensationContext) -> dict[str, Any]:
        snapshot_id = _record(ctx).get("snapshot_id") or ctx.input["snapshot_id"]
        with _external("thunderbolt.mark_snapshot_shadow"):
            before = self.world.upm.mark_shadow(snapshot_id)
        ctx.log.info("snapshot back to shadow", snapshot_id=snapshot_id, was=before)
        return {"snapshot_id": snapshot_id, "status_before": before}

    def sync_adapter(self, ctx: ItemContext) -> dict[str, Any]:
        """One adapter of the fan-out: its previous snapshot is checkpointed before it
        changes, so a sync that dies midway is still undone for this adapter (GAP-002)."""
        snapshot_id = str(_input(ctx, "snapshot_id"))
        adapter_id = str(ctx.item)

        def remember(previous: str | None) -> None:
            ctx.checkpoint({"snapshot_id": snapshot_id, "adapter_id": adapter_id,
                            "previous": previous})

        with _external("thunderblock.sync_adapter"):
            previous = self.world.block.sync_adapter(snapshot_id, adapter_id,
                                                     ctx.idempotency_key,
                                                     before_change=remember)
        ctx.log.info("adapter synced", snapshot_id=snapshot_id, adapter_id=adapter_id)
        return {"snapshot_id": snapshot_id, "adapter_id": adapter_id, "previous": previous}

    def restore_adapter(self, ctx: ItemCompensationContext) -> dict[str, Any]:
        """Put one adapter back on the snapshot its sync found it on."""
        record = _record(ctx)
        snapshot_id = record.get("snapshot_id") or ctx.input["snapshot_id"]
        adapter_id = str(record.get("adapter_id") or ctx.item)
        if "previous" not in record:  # nothing journaled: this adapter was never moved
            return {"adapter_id": adapter_id, "restored": False}
        with _external("thunderblock.restore_adapter"):
            restored = self.world.block.restore_adapter(snapshot_id, adapter_id,
                                                        record["previous"])
        ctx.log.info("adapter restored", adapter_id=adapter_id, restored=restored)
        return {"adapter_id": adapter_id, "restored": restored}

    # Version 1 of the saga synced every adapter in one step; kept for its runs in flight.
    def sync_adapters(self, ctx: StepContext) -> dict[str, Any]:
        snapshot_id = str(_input(ctx, "snapshot_id"))
        previous: dict[str, str | None] = {}

        def remember(adapter_id: str, prev: str | None) -> None:
            # Durable before the adapter changes: if the sync dies after this adapter,
            # the compensation still knows where to put it back.
            previous[adapter_id] = prev
            ctx.checkpoint({"snapshot_id": snapshot_id, "previous": dict(previous)})

        with _external("thunderblock.sync_adapters"):
            synced = self.world.block.sync_adapters(snapshot_id, ctx.idempotency_key,
                                                    before_change=remember)
        ctx.log.info("adapters synced", snapshot_id=snapshot_id, adapter_count=len(synced))
        return {"snapshot_id": snapshot_id, "previous": synced, "adapter_count": len(synced)}

    def restore_adapters(self, ctx: CompensationContext) -> dict[str, Any]:
        record = _record(ctx)
        snapshot_id = record.get("snapshot_id") or ctx.input["snapshot_id"]
        previous = record.get("previous") or {}
        with _external("thunderblock.restore_adapters"):
            restored = self.world.block.restore_adapters(snapshot_id, previous)
        ctx.log.info("adapters restored", snapshot_id=snapshot_id, restored=len(restored))
        return {"snapshot_id": snapshot_id, "restored": restored,
                "adapter_count": len(previous)}

    def activate_snapshot(self, ctx: StepContext) -> dict[str, Any]:
        snapshot_id = str(_input(ctx, "snapshot_id"))
        # The snapshot is announced as served by all adapters: make sure it is.
        behind = [a.name for a in self.world.block.adapters()
                  if a.active_snapshot_id != snapshot_id]
        if behind:
            raise PermanentError(f"adapters not on snapshot {snapshot_id}: {', '.join(behind)}")
        ctx.checkpoint({"snapshot_id": snapshot_id})
        with _external("thunderbolt.activate_snapshot"):
            snapshot = self.world.upm.activate(snapshot_id)
        return {"snapshot_id": snapshot_id, "activated_at": snapshot.activated_at,
                "replaced_snapshot_id": snapshot.replaced_snapshot_id}

    def deactivate_snapshot(self, ctx: CompensationContext) -> dict[str, Any]:
        snapshot_id = _record(ctx).get("snapshot_id") or ctx.input["snapshot_id"]
        with _external("thunderbolt.deactivate_snapshot"):
            changed = self.world.upm.deactivate(snapshot_id)
        ctx.log.info("snapshot deactivated", snapshot_id=snapshot_id, changed=changed)
        return {"snapshot_id": snapshot_id, "deactivated": changed}

    # --- cerebros_nas -----------------------------------------------------------------

    def create_model_run(self, ctx: StepContext) -> dict[str, Any]:
        ctx.checkpoint({"idempotency_key": ctx.idempotency_key})
        with _external("thunderbolt.create_model_run"):
            run_id = self.world.models.create_run(
                str(_input(ctx, "search_space")), str(_input(ctx, "dataset")),
                int(_input(ctx, "trials")), ctx.idempotency_key)
        return {"run_id": run_id}

    def fail_model_run(self, ctx: CompensationContext) -> dict[str, Any]:
        run_id = _created(_record(ctx), "run_id", self.world.models.run_for_key, "run_id")
        if run_id is None:
            return {"run_id": None, "failed": False}
        with _external("thunderbolt.fail_model_run"):
            changed = self.world.models.fail_run(
                run_id, f"saga {ctx.saga} run {ctx.run_id} rolled back")
        ctx.log.info("model run failed", model_run_id=run_id, changed=changed)
        return {"run_id": run_id, "failed": changed}

    def dispatch_training(self, ctx: StepContext) -> dict[str, Any]:
        run_id = _field(ctx, "create_run", "run_id")
        job_ids: list[str] = []

        def remember(job_id: str) -> None:
            # The bridge derives job ids from the key, so each id is journaled before its
            # job exists: a dispatch that dies midway leaves no job the compensation
            # does not know about.
            job_ids.append(job_id)
            ctx.checkpoint({"run_id": run_id, "job_ids": list(job_ids)})

        with _external("cerebros.dispatch_training"):
            dispatched = self.world.cerebros.dispatch(run_id, int(_input(ctx, "trials")),
                                                      ctx.idempotency_key,
                                                      before_each=remember)
            self.world.models.mark_training(run_id)
        ctx.log.info("training dispatched", model_run_id=run_id, jobs=len(dispatched))
        return {"run_id": run_id, "job_ids": dispatched}

    def cancel_training(self, ctx: CompensationContext) -> dict[str, Any]:
        job_ids = [str(j) for j in _record(ctx).get("job_ids") or []]
        cancelled: list[str] = []
        finished: dict[str, str] = {}
        with _external("cerebros.cancel_training"):
            for job_id in job_ids:
                status = self.world.cerebros.cancel(job_id)
                if status == "cancelled":
                    cancelled.append(job_id)
                else:
                    # Completed, failed, cancelled by an earlier attempt, or never
                    # received: in each case nothing is running, which is the goal.
                    finished[job_id] = status
        ctx.log.info("training cancelled", cancelled=len(cancelled), finished=len(finished))
        return {"cancelled": cancelled, "already_finished": finished}

    def persist_model_version(self, ctx: StepContext) -> dict[str, Any]:
        run_id = _field(ctx, "create_run", "run_id")
        data = _awaited_data(ctx.results.get("await_completion"))
        if data.get("run_id") != run_id:
            raise PermanentError(f"completion event is for run {data.get('run_id')}, "
                                 f"not {run_id}")
        with _external("thunderbolt.persist_model_version"):
            candidates = parse_candidates(data.get("candidates") or [])
            if not candidates:
                raise PermanentError(f"run {run_id} finished without candidates")
            # Derived from the key: every attempt of this step names the same version,
            # and the id is journaled before the version exists.
            version_id = str(uuid.uuid5(_VERSION_NAMESPACE, ctx.idempotency_key))
            ctx.checkpoint({"model_version_id": version_id, "run_id": run_id})
            version = self.world.models.create_version(version_id, run_id, candidates)
        ctx.log.info("model version persisted", model_version_id=version_id,
                     score=version.score)
        return {"model_version_id": version_id, "score": version.score,
                "model_id": version.model_id, "params": version.params, "run_id": run_id}

    def retire_model_version(self, ctx: CompensationContext) -> dict[str, Any]:
        version_id = _record(ctx).get("model_version_id")
        if version_id is None:
            return {"model_version_id": None, "retired": False}
        with _external("thunderbolt.retire_model_version"):
            retired = self.world.models.retire_version(version_id)
        ctx.log.info("model version retired", model_version_id=version_id, retired=retired)
        return {"model_version_id": version_id, "retired": retired}


ACTIONS: dict[str, str] = {
    "thundergate.validate_email": "validate_email",
    "thunderlink.create_user": "create_user",
    "thundergate.issue_magic_token": "issue_magic_token",
    "thundergate.send_magic_link": "send_magic_link",
    "thunderblock.provision_vault": "provision_vault",
    "thunderlink.add_community_membership": "add_community_membership",
    "thunderbolt.load_snapshot": "load_snapshot",
    "thunderbolt.mark_snapshot_activating": "mark_snapshot_activating",
    "thunderblock.sync_adapter": "sync_adapter",
    "thunderblock.sync_adapters": "sync_adapters",
    "thunderbolt.activate_snapshot": "activate_snapshot",
    "thunderbolt.create_model_run": "create_model_run",
    "cerebros.dispatch_training": "dispatch_training",
    "thunderbolt.persist_model_version": "persist_model_version",
}
COMPENSATIONS: dict[str, str] = {
    "thunderlink.delete_user": "delete_user",
    "thundergate.revoke_magic_token": "revoke_magic_token",
    "thunderblock.delete_vault": "delete_vault",
    "thunderlink.remove_community_membership": "remove_community_membership",
    "thunderbolt.mark_snapshot_shadow": "mark_snapshot_shadow",
    "thunderblock.restore_adapter": "restore_adapter",
    "thunderblock.restore_adapters": "restore_adapters",
    "thunderbolt.deactivate_snapshot": "deactivate_snapshot",
    "thunderbolt.fail_model_run": "fail_model_run",
    "cerebros.cancel_training": "cancel_training",
    "thunderbolt.retire_model_version": "retire_model_version",
}


# Handlers no current definition names, kept bound for the runs that started on an earlier
# version of their saga (a run finishes on the version it started with): upm_activation
# version 1 synced every adapter in one step.
EARLIER_VERSIONS: dict[str, str] = {"thunderblock.sync_adapters": "upm_activation v1",
                                    "thunderblock.restore_adapters": "upm_activation v1"}


def build_registry(world: World | Callable[[], World]) -> Registry:
    """A registry binding every handler of the reference sagas to ``world`` (or to the
    world a callable returns when a handler first needs it)."""
    handlers = ThunderlineHandlers(world)
    registry = Registry()
    for name, method in ACTIONS.items():
        registry.add_action(name, getattr(handlers, method))
    for name, method in COMPENSATIONS.items():
        registry.add_compensation(name, getattr(handlers, method))
    return registry


_default: World | None = None
_default_lock = threading.Lock()


def default_world() -> World:
    """The world behind the module's ``registry``: ``$THUNDERLINE_DB``, opened once.

    Opened on first use rather than at import, so importing this module (to validate
    or lint) creates no database file.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = World(os.environ.get(DB_ENV, DEFAULT_DB))
        return _default


registry = build_registry(default_world)
