"""ThunderBolt's model registry: model runs (a NAS search) and model versions.

A ``ModelVersion`` records the best candidate of a finished run together with the Pareto
frontier of the search (candidates no other beats on both score and size), and links
back to its ``ModelRun`` for audit. Versions are retired, never deleted, so the history
of what was once served survives a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thunderline.systems.base import System
from thunderline.systems.db import new_id
from thunderline.systems.errors import NotFound, Rejected

RUN_STATUSES = ("pending", "training", "failed", "completed")
VERSION_STATUSES = ("active", "retired")


@dataclass(frozen=True, slots=True)
class Candidate:
    model_id: str
    score: float
    params: int

    def as_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "score": self.score, "params": self.params}

    def dominates(self, other: Candidate) -> bool:
        """At least as good on both objectives (higher score, fewer params), better on one."""
        return (self.score >= other.score and self.params <= other.params
                and (self.score > other.score or self.params < other.params))


def parse_candidates(raw: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Candidates from an ``ml.training.completed`` payload, checked field by field."""
    parsed: list[Candidate] = []
    for index, item in enumerate(raw):
        model_id, score, params = item.get("model_id"), item.get("score"), item.get("params")
        if (not isinstance(model_id, str) or isinstance(score, bool)
                or not isinstance(score, int | float)
                or isinstance(params, bool) or not isinstance(params, int)):
            raise Rejected("models", f"candidate {index} is malformed: {dict(item)!r}")
        parsed.append(Candidate(model_id, float(score), params))
    return parsed


def pareto_frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated candidates, smallest first."""
    frontier = [c for c in candidates if not any(o.dominates(c) for o in candidates)]
    return sorted(frontier, key=lambda c: (c.params, -c.score, c.model_id))


def best_candidate(candidates: Sequence[Candidate]) -> Candidate:
    """Highest score; a tie goes to the smaller model (then the model id, for stability)."""
    if not candidates:
        raise Rejected("models", "no candidates to choose from")
    return min(candidates, key=lambda c: (-c.score, c.params, c.model_id))


@dataclass(frozen=True, slots=True)
class ModelRun:
    run_id: str
    search_space: str
    dataset: str
    trials: int
    status: str
    idempotency_key: str | None
    created_at: str
    updated_at: str
    failure_reason: str | None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model_version_id: str
    run_id: str
    model_id: str
    score: float
    params: int
    status: str
    metadata: dict[str, Any]
    created_at: str
    retired_at: str | None


class ModelRegistry(System):
    name = "models"
    OPERATIONS = ("create_run", "fail_run", "create_version", "retire_version")
    SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS models_runs (
        run_id TEXT PRIMARY KEY,
        search_space TEXT NOT NULL,
        dataset TEXT NOT NULL,
        trials INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN {RUN_STATUSES!r}),
        idempotency_key TEXT UNIQUE,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        failure_reason TEXT
    );
    CREATE TABLE IF NOT EXISTS models_versions (
        model_version_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES models_runs (run_id),
        model_id TEXT NOT NULL,
        score REAL NOT NULL,
        params INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN {VERSION_STATUSES!r}),
        metadata TEXT NOT NULL,
        created_at TEXT NOT NULL,
        retired_at TEXT
    );
    CREATE INDEX IF NOT EXISTS models_versions_run ON models_versions (run_id);
    """

    def create_run(self, search_space: str, dataset: str, trials: int,
                   idempotency_key: str) -> str:
        """Record a pending run; the same idempotency key returns the same run."""
        trip = self._guard("create_run")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT run_id FROM models_runs WHERE idempotency_key = ?",
                               (idempotency_key,)).fetchone()
            if row is not None:
                run_id = str(row[0])
            else:
                run_id = new_id()
                now = self._now()
                conn.execute("INSERT INTO models_runs (run_id, search_space, dataset, trials,"
                             " status, idempotency_key, created_at, updated_at)"
                             " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                             (run_id, search_space, dataset, trials, idempotency_key, now, now))
        trip.finish()
        return run_id

    def mark_training(self, run_id: str) -> None:
        """``pending -> training`` once its jobs are out (repeating is harmless)."""
        with self._db.transaction() as conn:
            status = self._run_status(conn, run_id)
            if status == "pending":
                conn.execute("UPDATE models_runs SET status = 'training', updated_at = ?"
                             " WHERE run_id = ?", (self._now(), run_id))
            elif status != "training":
                raise Rejected(self.name, f"run {run_id} is {status}; it cannot train")

    def fail_run(self, run_id: str, reason: str) -> bool:
        """Mark the run failed (kept for audit); ``False`` if it already was."""
        trip = self._guard("fail_run")
        with self._db.transaction() as conn:
            status = self._run_status(conn, run_id)
            changed = status != "failed"
            if changed:
                conn.execute("UPDATE models_runs SET status = 'failed', failure_reason = ?,"
                             " updated_at = ? WHERE run_id = ?", (reason, self._now(), run_id))
        trip.finish()
        return changed

    def create_version(self, model_version_id: str, run_id: str,
                       candidates: Sequence[Candidate]) -> ModelVersion:
        """Register the run's best candidate with the search's Pareto frontier.

        ``model_version_id`` is chosen by the caller (and recorded by it first), which
        makes the call idempotent: repeating it returns the version already created. The
        run becomes ``completed`` in the same transaction.
        """
        trip = self._guard("create_version")
        best = best_candidate(candidates)
        frontier = pareto_frontier(candidates)
        metadata = {
            "objectives": {"score": "maximize", "params": "minimize"},
            "candidate_count": len(candidates),
            "best_model_id": best.model_id,
            "pareto_frontier": [c.as_dict() for c in frontier],
        }
        with self._db.transaction() as conn:
            existing = conn.execute("SELECT run_id FROM models_versions"
                                    " WHERE model_version_id = ?",
                                    (model_version_id,)).fetchone()
            if existing is None:
                status = self._run_status(conn, run_id)
                if status not in ("pending", "training"):
                    raise Rejected(self.name, f"run {run_id} is {status}; "
                                              "it cannot take a new version")
                now = self._now()
                conn.execute("INSERT INTO models_versions (model_version_id, run_id, model_id,"
                             " score, params, status, metadata, created_at)"
                             " VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
                             (model_version_id, run_id, best.model_id, best.score, best.params,
                              json.dumps(metadata), now))
                conn.execute("UPDATE models_runs SET status = 'completed', updated_at = ?"
                             " WHERE run_id = ?", (now, run_id))
            elif existing[0] != run_id:
                raise Rejected(self.name, f"version {model_version_id} belongs to another run")
        trip.finish()
        return self.version(model_version_id)

    def retire_version(self, model_version_id: str) -> bool:
        """Retire a version; ``False`` if it already was (retiring is idempotent)."""
        trip = self._guard("retire_version")
        with self._db.transaction() as conn:
            changed = conn.execute("UPDATE models_versions SET status = 'retired',"
                                   " retired_at = ? WHERE model_version_id = ?"
                                   " AND status = 'active'",
                                   (self._now(), model_version_id)).rowcount > 0
        trip.finish()
        return changed

    def run(self, run_id: str) -> ModelRun:
        row = self._db.row("SELECT * FROM models_runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise NotFound(self.name, f"no model run {run_id}")
        return _run(row)

    def run_for_key(self, idempotency_key: str) -> ModelRun | None:
        row = self._db.row("SELECT * FROM models_runs WHERE idempotency_key = ?",
                           (idempotency_key,))
        return None if row is None else _run(row)

    def runs(self) -> list[ModelRun]:
        return [_run(r) for r in self._db.rows("SELECT * FROM models_runs ORDER BY created_at")]

    def version(self, model_version_id: str) -> ModelVersion:
        row = self._db.row("SELECT * FROM models_versions WHERE model_version_id = ?",
                           (model_version_id,))
        if row is None:
            raise NotFound(self.name, f"no model version {model_version_id}")
        return _version(row)

    def versions(self, run_id: str | None = None) -> list[ModelVersion]:
        if run_id is None:
            rows = self._db.rows("SELECT * FROM models_versions ORDER BY created_at")
        else:
            rows = self._db.rows("SELECT * FROM models_versions WHERE run_id = ?"
                                 " ORDER BY created_at", (run_id,))
        return [_version(r) for r in rows]

    def _run_status(self, conn: Any, run_id: str) -> str:
        row = conn.execute("SELECT status FROM models_runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        if row is None:
            raise NotFound(self.name, f"no model run {run_id}")
        return str(row[0])


def _run(row: Any) -> ModelRun:
    return ModelRun(
        run_id=row["run_id"], search_space=row["search_space"], dataset=row["dataset"],
        trials=int(row["trials"]), status=row["status"],
        idempotency_key=row["idempotency_key"], created_at=row["created_at"],
        updated_at=row["updated_at"], failure_reason=row["failure_reason"])


def _version(row: Any) -> ModelVersion:
    return ModelVersion(
        model_version_id=row["model_version_id"], run_id=row["run_id"],
        model_id=row["model_id"], score=float(row["score"]), params=int(row["params"]),
        status=row["status"], metadata=json.loads(row["metadata"]),
        created_at=row["created_at"], retired_at=row["retired_at"])
