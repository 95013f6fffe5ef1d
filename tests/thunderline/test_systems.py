"""The simulated systems on their own: state, idempotency, failure injection, invariants."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from thunderline.systems.errors import InjectedFailure, NotFound, Rejected, Unavailable
from thunderline.systems.models import Candidate, best_candidate, pareto_frontier
from thunderline.world import World

# --- failure plan --------------------------------------------------------------------


def test_fail_next_rejects_unknown_operations(world: World) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        world.fail_next("cerebros.dispatch_jobs")
    assert "cerebros.dispatch" in world.operations
    assert "thunderblock.sync_adapters" in world.operations


def test_failure_fires_once_per_planned_call_then_clears(world: World) -> None:
    world.fail_next("thunderlink.create_user", times=2)
    for _ in range(2):
        with pytest.raises(InjectedFailure):
            world.link.create_user("a@example.com", "A", "k1")
    assert world.link.users() == []
    user_id = world.link.create_user("a@example.com", "A", "k1")
    assert [u.user_id for u in world.link.users()] == [user_id]
    assert [f.operation for f in world.fired_failures()] == ["thunderlink.create_user"] * 2
    assert world.faults.pending() == {}


def test_failure_with_a_given_error_class_or_instance(world: World) -> None:
    world.fail_next("thunderlink.create_user", error=Rejected("thunderlink", "quota"))
    world.fail_next("thunderlink.create_user", error=KeyError)
    with pytest.raises(Rejected, match="quota"):
        world.link.create_user("a@example.com", "A", "k1")
    with pytest.raises(KeyError):
        world.link.create_user("a@example.com", "A", "k1")


def test_failure_after_the_work_is_a_lost_response(world: World) -> None:
    world.fail_next("thunderlink.create_user", after=1)
    with pytest.raises(InjectedFailure):
        world.link.create_user("a@example.com", "A", "k1")
    created = world.link.user_for_key("k1")
    assert created is not None  # the user exists though the caller saw a failure
    assert world.link.create_user("a@example.com", "A", "k1") == created.user_id


def test_injected_failures_are_transient_connection_errors() -> None:
    assert issubclass(InjectedFailure, Unavailable)
    assert issubclass(InjectedFailure, ConnectionError)


def test_clear_failures(world: World) -> None:
    world.fail_next("upm.load", times=3)
    world.clear_failures()
    assert world.faults.pending() == {}


# --- Cerebros bridge -----------------------------------------------------------------


def test_dispatch_is_idempotent_per_key(world: World) -> None:
    first = world.cerebros.dispatch("run-1", 3, "key-1")
    again = world.cerebros.dispatch("run-1", 3, "key-1")
    assert first == again
    assert len(world.cerebros.jobs("run-1")) == 3
    other = world.cerebros.dispatch("run-1", 2, "key-2")
    assert set(other).isdisjoint(first)
    assert len(world.running_jobs("run-1")) == 5


def test_dispatch_key_cannot_be_reused_for_another_run(world: World) -> None:
    world.cerebros.dispatch("run-1", 1, "key-1")
    with pytest.raises(Rejected, match="run-1"):
        world.cerebros.dispatch("run-2", 1, "key-1")


def test_dispatch_failing_midway_leaves_earlier_jobs_running(world: World) -> None:
    announced: list[str] = []
    world.fail_next("cerebros.dispatch", after=2)
    with pytest.raises(InjectedFailure):
        world.cerebros.dispatch("run-1", 4, "key-1", before_each=announced.append)
    running = world.running_jobs("run-1")
    assert [j.trial for j in running] == [0, 1]
    assert announced == [j.job_id for j in running]
    # A retry with the same key keeps those two and dispatches the rest.
    job_ids = world.cerebros.dispatch("run-1", 4, "key-1")
    assert job_ids[:2] == announced
    assert len(world.running_jobs("run-1")) == 4


def test_cancel_treats_finished_jobs_as_success(world: World) -> None:
    a, b, c = world.cerebros.dispatch("run-1", 3, "key-1")
    world.cerebros.start("run-1")
    assert {j.status for j in world.cerebros.jobs("run-1")} == {"running"}
    world.cerebros.fail_job(c, "oom")
    assert world.cerebros.cancel(a) == "cancelled"
    assert world.cerebros.cancel(a) == "cancelled"
    assert world.cerebros.cancel(c) == "failed"
    world.cerebros.complete_run("run-1")
    assert world.cerebros.job(b).status == "completed"
    assert world.cerebros.cancel(b) == "completed"
    assert world.cerebros.job(b).status == "completed"
    assert world.cerebros.cancel("never-dispatched") == "unknown"
    assert world.running_jobs() == []


def test_complete_run_returns_the_completion_event_payload(world: World) -> None:
    job_ids = world.cerebros.dispatch("run-1", 3, "key-1")
    world.cerebros.cancel(job_ids[1])
    payload = world.cerebros.complete_run("run-1")
    assert payload["run_id"] == "run-1"
    assert [c["model_id"] for c in payload["candidates"]] == ["nas-run-1-t00", "nas-run-1-t02"]
    for candidate in payload["candidates"]:
        assert set(candidate) == {"model_id", "score", "params"}
        assert 0.6 <= candidate["score"] <= 0.98
        assert isinstance(candidate["params"], int)
    assert world.running_jobs("run-1") == []
    with pytest.raises(NotFound):
        world.cerebros.complete_run("run-unknown")


def test_training_results_are_deterministic_for_a_seed() -> None:
    def results(seed: int) -> object:
        with World(seed=seed) as w:
            w.cerebros.dispatch("run-1", 4, "key-1")
            return w.cerebros.complete_run("run-1")

    assert results(1) == results(1)
    assert results(1) != results(2)


# --- ThunderBlock --------------------------------------------------------------------


def test_sync_reports_previous_snapshots_and_moves_every_adapter(world: World) -> None:
    base = world.ensure_upm_baseline(adapters=3)
    new = world.upm.create_snapshot(0.1)
    seen: list[tuple[str, str | None]] = []
    previous = world.block.sync_adapters(new, "sync-1",
                                         before_change=lambda a, p: seen.append((a, p)))
    assert previous == dict.fromkeys(world.adapter_snapshots(), base)
    assert seen == list(previous.items())
    assert set(world.adapter_snapshots().values()) == {new}


def test_sync_failing_midway_and_retried_keeps_the_original_previous(world: World) -> None:
    base = world.ensure_upm_baseline(adapters=4)
    new = world.upm.create_snapshot(0.1)
    world.fail_next("thunderblock.sync_adapters", after=2)
    with pytest.raises(InjectedFailure):
        world.block.sync_adapters(new, "sync-1")
    assert sorted(map(str, world.adapter_snapshots().values())) == sorted([base, base, new, new])
    previous = world.block.sync_adapters(new, "sync-1")
    # Two adapters were already on `new` when the retry saw them; the ledger remembers.
    assert set(previous.values()) == {base}


def test_restore_is_one_transaction(world: World) -> None:
    base = world.ensure_upm_baseline(adapters=3)
    new = world.upm.create_snapshot(0.1)
    previous = world.block.sync_adapters(new, "sync-1")
    world.fail_next("thunderblock.restore_adapters", after=2)
    with pytest.raises(InjectedFailure):
        world.block.restore_adapters(new, previous)
    assert set(world.adapter_snapshots().values()) == {new}  # none restored
    restored = world.block.restore_adapters(new, previous)
    assert sorted(restored) == sorted(previous)
    assert set(world.adapter_snapshots().values()) == {base}
    assert world.block.restore_adapters(new, previous) == []  # already undone


def test_restore_leaves_an_adapter_someone_else_moved_since(world: World) -> None:
    base = world.ensure_upm_baseline(adapters=2)
    new = world.upm.create_snapshot(0.1)
    other = world.upm.create_snapshot(0.2)
    previous = world.block.sync_adapters(new, "sync-1")
    first, second = previous
    with world.db.transaction() as conn:
        conn.execute("UPDATE thunderblock_adapters SET active_snapshot_id = ?"
                     " WHERE adapter_id = ?", (other, second))
    assert world.block.restore_adapters(new, previous) == [first]
    assert world.adapter_snapshots() == {first: base, second: other}


def test_vaults_are_idempotent_per_key_and_deletable(world: World) -> None:
    vault_id = world.block.provision_vault("user-1", "vault-key")
    assert world.block.provision_vault("user-1", "vault-key") == vault_id
    assert [v.vault_id for v in world.block.vaults("user-1")] == [vault_id]
    assert world.block.delete_vault(vault_id) is True
    assert world.block.delete_vault(vault_id) is False
    assert world.block.vaults() == []


# --- UPM snapshots -------------------------------------------------------------------


def test_snapshot_lifecycle_and_rollback(world: World) -> None:
    base = world.ensure_upm_baseline()
    new = world.upm.create_snapshot(0.12, shadow_validated=True)
    assert world.upm.mark_activating(new) == "shadow"
    assert world.upm.mark_activating(new) == "activating"
    activated = world.upm.activate(new)
    assert activated.status == "active"
    assert activated.replaced_snapshot_id == base
    assert world.upm.snapshot(base).status == "retired"
    assert world.upm.activate(new).activated_at == activated.activated_at
    with pytest.raises(Rejected, match="deactivate"):
        world.upm.mark_shadow(new)
    assert world.upm.deactivate(new) is True
    assert world.upm.deactivate(new) is False
    assert world.upm.snapshot(base).status == "active"
    assert world.upm.mark_shadow(new) == "activating"
    assert world.upm.snapshot(new).status == "shadow"
    assert world.upm.active_snapshot() == world.upm.snapshot(base)


def test_only_an_activating_snapshot_can_be_activated(world: World) -> None:
    new = world.upm.create_snapshot(0.1)
    with pytest.raises(Rejected, match="shadow, not activating"):
        world.upm.activate(new)
    with pytest.raises(NotFound):
        world.upm.load("no-such-snapshot")


# --- model registry ------------------------------------------------------------------


def test_pareto_frontier_and_best_candidate() -> None:
    a = Candidate("a", 0.90, 1_000)
    b = Candidate("b", 0.95, 5_000)
    c = Candidate("c", 0.85, 2_000)   # dominated by a
    d = Candidate("d", 0.95, 9_000)   # dominated by b
    e = Candidate("e", 0.97, 20_000)
    assert pareto_frontier([a, b, c, d, e]) == [a, b, e]
    assert best_candidate([a, b, c, d, e]) == e
    assert best_candidate([d, b]) == b  # equal score: the smaller model wins
    with pytest.raises(Rejected):
        best_candidate([])


def test_model_version_links_its_run_and_is_retired_not_deleted(world: World) -> None:
    run_id = world.models.create_run("cnn-small", "cifar10", 3, "run-key")
    assert world.models.create_run("cnn-small", "cifar10", 3, "run-key") == run_id
    world.models.mark_training(run_id)
    candidates = [Candidate("a", 0.9, 1_000), Candidate("b", 0.95, 5_000)]
    version = world.models.create_version("v-1", run_id, candidates)
    assert world.models.create_version("v-1", run_id, candidates) == version
    assert (version.run_id, version.model_id, version.score, version.status) == (
        run_id, "b", 0.95, "active")
    assert version.metadata["pareto_frontier"] == [c.as_dict() for c in candidates]
    assert version.metadata["candidate_count"] == 2
    assert world.models.run(run_id).status == "completed"
    assert world.models.retire_version("v-1") is True
    assert world.models.retire_version("v-1") is False
    assert world.models.versions(run_id)[0].status == "retired"


def test_a_failed_run_takes_no_version(world: World) -> None:
    run_id = world.models.create_run("s", "d", 1, "run-key")
    assert world.models.fail_run(run_id, "rolled back") is True
    assert world.models.fail_run(run_id, "rolled back") is False
    assert world.models.run(run_id).failure_reason == "rolled back"
    with pytest.raises(Rejected, match="failed"):
        world.models.create_version("v-1", run_id, [Candidate("a", 0.9, 10)])


# --- ThunderLink ---------------------------------------------------------------------


def test_default_community_exists_once(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    with World(path) as w:
        community = w.link.default_community()
    with World(path) as w:
        assert w.link.communities() == [community]
        assert community.is_default


def test_users_are_unique_by_email_and_idempotent_by_key(world: World) -> None:
    user_id = world.link.create_user("Ada@Example.com", "Ada", "k1")
    assert world.link.create_user("ada@example.com", "Ada", "k1") == user_id
    with pytest.raises(Rejected, match="already exists"):
        world.link.create_user("ada@example.com", "Ada again", "k2")
    assert world.link.find_user_by_email("ADA@example.com") == world.link.user(user_id)


def test_memberships_and_orphans(world: World) -> None:
    user_id = world.link.create_user("ada@example.com", "Ada", "k1")
    community = world.link.default_community().community_id
    membership_id = world.link.add_membership(user_id, community, "m1")
    assert world.link.add_membership(user_id, community, "m2") == membership_id
    world.link.delete_user(user_id)
    assert [m.membership_id for m in world.orphan_memberships()] == [membership_id]
    assert [v.invariant for v in world.check_invariants()] == ["no orphan memberships"]
    assert world.link.remove_membership(membership_id) is True
    assert world.link.remove_membership(membership_id) is False
    assert world.orphan_memberships() == []
    assert world.check_invariants() == []


# --- ThunderGate ---------------------------------------------------------------------


def test_check_email(world: World) -> None:
    assert world.gate.check_email("  ada@example.com ") == "ada@example.com"
    for bad in ("ada", "ada@", "ada@example", "a b@example.com", "@example.com"):
        with pytest.raises(Rejected):
            world.gate.check_email(bad)


def test_magic_link_send_records_its_correlation_id(world: World) -> None:
    token = world.gate.issue_token("user-1", "ada@example.com", "t1")
    secret = world.gate.token_secret(token.token_id)
    message_id = world.gate.send_magic_link(
        "ada@example.com", secret, "https://app.example/in?next=home",
        correlation_id="corr-42", idempotency_key="send-1")
    [sent] = world.gate.outbox()
    assert (sent.message_id, sent.correlation_id) == (message_id, "corr-42")
    assert sent.link == f"https://app.example/in?next=home&token={secret}"
    [record] = world.gate.telemetry("corr-42")
    assert record.name == "magic_link.sent"
    assert record.attributes["message_id"] == message_id
    # A retry with the same key does not send a second email.
    assert world.gate.send_magic_link("ada@example.com", secret, "https://app.example/in",
                                      correlation_id="corr-42",
                                      idempotency_key="send-1") == message_id
    assert len(world.gate.outbox()) == 1


def test_correlation_id_is_a_required_keyword(world: World) -> None:
    token = world.gate.issue_token("user-1", "ada@example.com", "t1")
    secret = world.gate.token_secret(token.token_id)
    send = world.gate.send_magic_link
    with pytest.raises(TypeError):
        send("ada@example.com", secret, "https://x.example", "corr-1")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="correlation_id"):
        send("ada@example.com", secret, "https://x.example", correlation_id="")


def test_failed_sends_are_traceable_and_revoked_tokens_do_not_send(world: World) -> None:
    token = world.gate.issue_token("user-1", "ada@example.com", "t1")
    secret = world.gate.token_secret(token.token_id)
    world.fail_next("thundergate.send_magic_link")
    with pytest.raises(InjectedFailure):
        world.gate.send_magic_link("ada@example.com", secret, "https://x.example",
                                   correlation_id="corr-7")
    assert world.gate.revoke_token(token.token_id) is True
    assert world.gate.revoke_token(token.token_id) is False
    with pytest.raises(Rejected, match="revoked"):
        world.gate.send_magic_link("ada@example.com", secret, "https://x.example",
                                   correlation_id="corr-7")
    with pytest.raises(Rejected, match="revoked"):
        world.gate.token_secret(token.token_id)
    assert world.gate.outbox() == []
    assert [r.name for r in world.gate.telemetry("corr-7")] == ["magic_link.failed"] * 2


def test_tokens_expire() -> None:
    now = [datetime(2026, 1, 1, 12, 0, tzinfo=UTC)]
    with World(clock=lambda: now[0]) as w:
        token = w.gate.issue_token("user-1", "ada@example.com", "t1")
        assert token.expires_at == "2026-01-01T12:15:00.000000+00:00"
        assert w.gate.token_secret(token.token_id)
        now[0] = datetime(2026, 1, 1, 12, 20, tzinfo=UTC)
        with pytest.raises(Rejected, match="expired"):
            w.gate.token_secret(token.token_id)


# --- the world -----------------------------------------------------------------------


def test_a_nested_transaction_rolls_back_alone(world: World) -> None:
    insert = "INSERT INTO thunderlink_communities VALUES (?, ?, ?, 0, '')"

    def failing(slug: str) -> None:
        with world.db.transaction() as conn:
            conn.execute(insert, (slug, slug, slug.title()))
            raise RuntimeError(f"work after {slug} fails")

    with world.db.transaction() as conn:
        conn.execute(insert, ("one", "one", "One"))
        with pytest.raises(RuntimeError):
            failing("two")  # a savepoint inside the outer transaction
    with pytest.raises(RuntimeError):
        failing("three")
    assert {c.slug for c in world.link.communities()} == {"commons", "one"}


def test_the_world_can_be_used_from_several_threads(tmp_path: Path) -> None:
    # An engine runs sync handlers of parallel steps in a thread pool.
    with World(tmp_path / "world.db") as w, ThreadPoolExecutor(max_workers=8) as pool:
        runs = [f"run-{i}" for i in range(16)]
        list(pool.map(lambda run: w.cerebros.dispatch(run, 3, f"key-{run}"), runs))
        list(pool.map(lambda run: w.cerebros.complete_run(run), runs[::2]))
        assert len(w.running_jobs()) == 8 * 3
        assert len(w.cerebros.jobs()) == 16 * 3


def test_state_persists_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    with World(path) as w:
        job_ids = w.cerebros.dispatch("run-1", 2, "key-1")
        w.ensure_upm_baseline(adapters=2)
    with World(path) as w:
        assert [j.job_id for j in w.running_jobs()] == job_ids
        assert len(w.block.adapters()) == 2
        assert w.db.scalar("PRAGMA journal_mode") == "wal"


def test_invariants_find_each_kind_of_leftover(world: World) -> None:
    base = world.ensure_upm_baseline(adapters=2)
    assert world.check_invariants() == []
    run_id = world.models.create_run("s", "d", 2, "run-key")
    world.cerebros.dispatch(run_id, 2, "dispatch-key")
    assert world.leaked_jobs() == []  # a pending run may have jobs running
    world.models.fail_run(run_id, "gone")
    user_id = world.link.create_user("ada@example.com", "Ada", "u1")
    world.block.provision_vault(user_id, "v1")
    world.gate.issue_token(user_id, "ada@example.com", "t1")
    world.link.delete_user(user_id)
    new = world.upm.create_snapshot(0.1)
    world.upm.mark_activating(new)
    world.block.sync_adapters(new, "sync-1")
    found = {v.invariant for v in world.check_invariants()}
    assert found == {"no leaked training jobs", "adapters serve the active snapshot",
                     "no snapshot stuck activating", "no orphan vaults",
                     "no live tokens of deleted users"}
    assert set(world.adapters_not_on(dict.fromkeys(world.adapter_snapshots(), base))) == set(
        world.adapter_snapshots())
