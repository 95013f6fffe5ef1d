"""The simulated Thunderline world: every external system over one SQLite file.

Handlers change it, tests and the demo look at it afterwards: not at a log of calls but
at the state a real platform would be left in (jobs still burning compute, adapters on
the wrong snapshot, memberships of users who no longer exist). ``check_invariants``
lists every such inconsistency; a rolled-back saga must leave none.

    world = World("thunderline.db")          # or World() for an in-memory world
    world.fail_next("cerebros.dispatch", after=2)   # the 3rd job's dispatch fails
    ...
    assert world.running_jobs(run_id) == []
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from thunderline.systems.cerebros import CerebrosBridge, TrainingJob
from thunderline.systems.db import Clock, Database, utc_now
from thunderline.systems.faults import ErrorSpec, FailurePlan, FiredFailure
from thunderline.systems.models import ModelRegistry, ModelVersion
from thunderline.systems.thunderblock import Adapter, ThunderBlock, Vault
from thunderline.systems.thundergate import MagicToken, ThunderGate
from thunderline.systems.thunderlink import Membership, ThunderLink
from thunderline.systems.upm import Snapshot, UPMSnapshots


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: which one, and the rows that break it."""

    invariant: str
    detail: str


class World:
    """All simulated systems, sharing one database, one failure plan and one clock.

    ``seed`` makes the Cerebros bridge's training results reproducible; ``clock`` (a
    callable returning an aware datetime) lets tests fix time.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, seed: int = 0,
                 clock: Clock | None = None) -> None:
        self.path = os.fspath(path)
        self.db = Database(self.path)
        self.faults = FailurePlan()
        clock = clock or utc_now
        self.cerebros = CerebrosBridge(self.db, self.faults, clock, seed)
        self.block = ThunderBlock(self.db, self.faults, clock)
        self.upm = UPMSnapshots(self.db, self.faults, clock)
        self.models = ModelRegistry(self.db, self.faults, clock)
        self.link = ThunderLink(self.db, self.faults, clock)
        self.gate = ThunderGate(self.db, self.faults, clock)
        self._systems = (self.cerebros, self.block, self.upm, self.models, self.link,
                         self.gate)
        for system in self._systems:
            self.db.create_schema(system.SCHEMA)
        self.link.ensure_default_community()

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> World:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- failure injection ----------------------------------------------------------

    @property
    def operations(self) -> list[str]:
        """Every operation a failure can be planted in, ``"<system>.<operation>"``."""
        return [point for system in self._systems for point in system.fault_points()]

    def fail_next(self, operation: str, *, times: int = 1, after: int = 0,
                  error: ErrorSpec = None, skip: int = 0) -> None:
        """Make the next ``times`` calls of ``operation`` fail (after ``skip`` calls that
        pass untouched: ``skip=2`` fails the third adapter a fan-out syncs).

        ``after`` is how many items the call completes first: 0 fails before any side
        effect; for a multi-item operation (dispatching n jobs, syncing n adapters) a
        value below n fails midway, with the first ``after`` items done; n or more (or
        1 for a single-item operation) fails once all the work is done. ``error`` is an
        exception (instance or class) to raise instead of a transient
        ``InjectedFailure``.
        """
        if operation not in self.operations:
            raise ValueError(f"unknown operation {operation!r}; known: "
                             + ", ".join(self.operations))
        self.faults.fail_next(operation, times=times, after=after, error=error, skip=skip)

    def clear_failures(self) -> None:
        self.faults.clear()

    def fired_failures(self) -> list[FiredFailure]:
        return self.faults.fired()

    # --- set-up helpers -------------------------------------------------------------

    def ensure_upm_baseline(self, adapters: int = 3) -> str:
        """An active snapshot served by ``adapters`` adapters; returns its id.

        Creates them only if there is no active snapshot yet, so a demo can call it on
        every start over the same file.
        """
        active = self.upm.active_snapshot()
        if active is not None:
            return active.snapshot_id
        snapshot_id = self.upm.create_snapshot(0.0, shadow_validated=True, status="active")
        existing = {a.name: a.adapter_id for a in self.block.adapters()}
        for index in range(adapters):
            name = f"adapter-{index + 1}"
            if name not in existing:
                existing[name] = self.block.create_adapter(name, snapshot_id)
        # Adapters that were already there follow the new baseline too, so the world
        # starts consistent: every adapter serves the active snapshot.
        with self.db.transaction() as conn:
            conn.execute("UPDATE thunderblock_adapters SET active_snapshot_id = ?",
                         (snapshot_id,))
        return snapshot_id

    # --- invariant queries ----------------------------------------------------------

    def running_jobs(self, run_id: str | None = None) -> list[TrainingJob]:
        """Jobs still holding compute (dispatched or running), of one run or all."""
        return self.cerebros.running_jobs(run_id)

    def leaked_jobs(self) -> list[TrainingJob]:
        """Running jobs whose model run is over (failed or completed) or unknown."""
        open_runs = {r.run_id for r in self.models.runs() if r.status in ("pending", "training")}
        return [job for job in self.running_jobs() if job.run_id not in open_runs]

    def adapter_snapshots(self) -> dict[str, str | None]:
        return self.block.adapter_snapshots()

    def adapters_not_on(self, expected: Mapping[str, str | None]
                        ) -> dict[str, tuple[str | None, str | None]]:
        """Adapters whose snapshot differs from ``expected`` (adapter id -> snapshot id),
        as ``{adapter_id: (expected, actual)}``; an expected adapter that no longer
        exists reports ``actual`` None."""
        actual = self.block.adapter_snapshots()
        return {adapter_id: (want, actual.get(adapter_id))
                for adapter_id, want in expected.items()
                if adapter_id not in actual or actual[adapter_id] != want}

    def adapters_off_active_snapshot(self) -> list[Adapter]:
        """Adapters not serving the active snapshot (none when no snapshot is active)."""
        active = self.upm.active_snapshot()
        if active is None:
            return []
        return [a for a in self.block.adapters() if a.active_snapshot_id != active.snapshot_id]

    def snapshots_in(self, status: str) -> list[Snapshot]:
        return [s for s in self.upm.snapshots() if s.status == status]

    def orphan_memberships(self) -> list[Membership]:
        """Memberships whose user no longer exists."""
        users = {u.user_id for u in self.link.users()}
        return [m for m in self.link.memberships() if m.user_id not in users]

    def orphan_vaults(self) -> list[Vault]:
        """Vaults whose user no longer exists."""
        users = {u.user_id for u in self.link.users()}
        return [v for v in self.block.vaults() if v.user_id not in users]

    def orphan_tokens(self) -> list[MagicToken]:
        """Magic tokens still valid for a user who no longer exists."""
        users = {u.user_id for u in self.link.users()}
        return [t for t in self.gate.tokens() if t.status == "issued" and t.user_id not in users]

    def stray_model_versions(self) -> list[ModelVersion]:
        """Active model versions whose run did not complete."""
        completed = {r.run_id for r in self.models.runs() if r.status == "completed"}
        return [v for v in self.models.versions()
                if v.status == "active" and v.run_id not in completed]

    def check_invariants(self) -> list[Violation]:
        """Every inconsistency in the world at rest (with no saga in flight)."""
        found: list[Violation] = []

        def add(invariant: str, items: list[str]) -> None:
            if items:
                found.append(Violation(invariant, ", ".join(items)))

        add("no leaked training jobs",
            [f"job {j.job_id} of run {j.run_id} is {j.status}" for j in self.leaked_jobs()])
        add("adapters serve the active snapshot",
            [f"adapter {a.name} on {a.active_snapshot_id}"
             for a in self.adapters_off_active_snapshot()])
        add("no snapshot stuck activating",
            [s.snapshot_id for s in self.snapshots_in("activating")])
        add("no orphan memberships",
            [f"membership {m.membership_id} of user {m.user_id}"
             for m in self.orphan_memberships()])
        add("no orphan vaults",
            [f"vault {v.vault_id} of user {v.user_id}" for v in self.orphan_vaults()])
        add("no live tokens of deleted users",
            [f"token {t.token_id} of user {t.user_id}" for t in self.orphan_tokens()])
        add("active model versions belong to completed runs",
            [f"version {v.model_version_id} of run {v.run_id}"
             for v in self.stray_model_versions()])
        return found
