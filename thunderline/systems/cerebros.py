"""The Cerebros bridge: training jobs of neural architecture searches.

A model run's trials are dispatched as jobs that hold (expensive, simulated) compute
until they complete, fail or are cancelled. Completion is reported from *outside* any
saga: ``complete_run`` finishes a run's jobs and returns the payload of the
``ml.training.completed`` event that the bridge sends, which a saga awaits.

Job ids are derived from the dispatch's idempotency key and the trial number, so a
caller knows a job's id before asking for it (and can record it durably first), and a
repeated dispatch with the same key finds the same jobs instead of starting new ones.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thunderline.systems.base import System
from thunderline.systems.db import Clock, Database
from thunderline.systems.errors import NotFound, Rejected
from thunderline.systems.faults import FailurePlan

JOB_STATUSES = ("dispatched", "running", "completed", "failed", "cancelled")
# Jobs in these states still hold compute; anything left in them after a failed run leaks.
ACTIVE_STATUSES = ("dispatched", "running")
_JOB_NAMESPACE = uuid.UUID("6f1c4a52-3b7e-4c1d-9a51-0c2e8d4b7a10")


@dataclass(frozen=True, slots=True)
class TrainingJob:
    job_id: str
    run_id: str
    trial: int
    status: str
    idempotency_key: str
    dispatched_at: str
    updated_at: str
    result: dict[str, Any] | None
    error: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class CerebrosBridge(System):
    name = "cerebros"
    OPERATIONS = ("dispatch", "cancel")
    SCHEMA = f"""
    CREATE TABLE IF NOT EXISTS cerebros_jobs (
        job_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        trial INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN {JOB_STATUSES!r}),
        dispatched_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        result TEXT,
        error TEXT,
        UNIQUE (idempotency_key, trial)
    );
    CREATE INDEX IF NOT EXISTS cerebros_jobs_run ON cerebros_jobs (run_id, status);
    """

    def __init__(self, db: Database, faults: FailurePlan, clock: Clock, seed: int) -> None:
        super().__init__(db, faults, clock)
        self._seed = seed

    @staticmethod
    def job_id_for(idempotency_key: str, trial: int) -> str:
        """The id the job of ``trial`` gets when dispatched under ``idempotency_key``."""
        return str(uuid.uuid5(_JOB_NAMESPACE, f"{idempotency_key}/{trial}"))

    def dispatch(self, run_id: str, trials: int, idempotency_key: str, *,
                 before_each: Callable[[str], None] | None = None) -> list[str]:
        """Dispatch one job per trial; returns the job ids in trial order.

        Each job is its own remote call (its own transaction), so a failure midway leaves
        the earlier jobs dispatched and running. ``before_each(job_id)`` is called before
        each job is sent, jobs found from an earlier call with the same key included, so
        a caller can record every id durably before the job exists.
        """
        if trials < 1:
            raise Rejected(self.name, f"trials must be at least 1, got {trials}")
        owner = self._db.scalar(
            "SELECT run_id FROM cerebros_jobs WHERE idempotency_key = ? LIMIT 1",
            (idempotency_key,))
        if owner is not None and owner != run_id:
            raise Rejected(self.name, f"idempotency key {idempotency_key!r} was used for run "
                                      f"{owner}, not {run_id}")
        trip = self._trip("dispatch")
        job_ids: list[str] = []
        for trial in range(trials):
            trip.item(trial)
            job_id = self.job_id_for(idempotency_key, trial)
            if before_each is not None:
                before_each(job_id)
            now = self._now()
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO cerebros_jobs (job_id, run_id, trial, idempotency_key, status,"
                    " dispatched_at, updated_at) VALUES (?, ?, ?, ?, 'dispatched', ?, ?)"
                    " ON CONFLICT (job_id) DO NOTHING",
                    (job_id, run_id, trial, idempotency_key, now, now))
            job_ids.append(job_id)
        trip.finish()
        return job_ids

    def start(self, run_id: str | None = None) -> int:
        """The bridge picks dispatched jobs up (all, or one run's); returns how many."""
        sql = ("UPDATE cerebros_jobs SET status = 'running', updated_at = ?"
               " WHERE status = 'dispatched'")
        params: list[Any] = [self._now()]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        with self._db.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns its status afterwards.

        A job that already finished (completed, failed or cancelled) is left as it is and
        that is success: there is nothing left to stop. A job id the bridge never received
        (recorded by a caller just before a failed dispatch) reports ``"unknown"``.
        """
        trip = self._guard("cancel")
        with self._db.transaction() as conn:
            row = conn.execute("SELECT status FROM cerebros_jobs WHERE job_id = ?",
                               (job_id,)).fetchone()
            if row is None:
                status = "unknown"
            elif row["status"] in ACTIVE_STATUSES:
                conn.execute("UPDATE cerebros_jobs SET status = 'cancelled', updated_at = ?"
                             " WHERE job_id = ?", (self._now(), job_id))
                status = "cancelled"
            else:
                status = str(row["status"])
        trip.finish()
        return status

    def fail_job(self, job_id: str, error: str) -> None:
        """The bridge reports that a job crashed (it no longer holds compute)."""
        with self._db.transaction() as conn:
            changed = conn.execute(
                "UPDATE cerebros_jobs SET status = 'failed', error = ?, updated_at = ?"
                " WHERE job_id = ? AND status IN ('dispatched', 'running')",
                (error, self._now(), job_id)).rowcount
        if not changed:
            raise Rejected(self.name, f"job {job_id} is not running")

    def complete_run(self, run_id: str) -> dict[str, Any]:
        """Finish every active job of ``run_id`` with a candidate model.

        Returns the ``ml.training.completed`` payload ``{run_id, candidates}``: one
        candidate (model_id, score, params) per completed job, in trial order. Results are
        deterministic for a given world seed, run id and trial.
        """
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT job_id, trial, status FROM cerebros_jobs"
                                " WHERE run_id = ? ORDER BY trial", (run_id,)).fetchall()
            if not rows:
                raise NotFound(self.name, f"no jobs for run {run_id}")
            now = self._now()
            for row in rows:
                if row["status"] in ACTIVE_STATUSES:
                    result = self._candidate(run_id, int(row["trial"]))
                    conn.execute("UPDATE cerebros_jobs SET status = 'completed', result = ?,"
                                 " updated_at = ? WHERE job_id = ?",
                                 (json.dumps(result), now, row["job_id"]))
        candidates = [job.result for job in self.jobs(run_id)
                      if job.status == "completed" and job.result is not None]
        return {"run_id": run_id, "candidates": candidates}

    def _candidate(self, run_id: str, trial: int) -> dict[str, Any]:
        rng = random.Random(f"{self._seed}:{run_id}:{trial}")
        return {
            "model_id": f"nas-{run_id[:8]}-t{trial:02d}",
            "score": round(rng.uniform(0.60, 0.98), 4),
            "params": rng.randrange(50_000, 20_000_000),
        }

    def job(self, job_id: str) -> TrainingJob:
        row = self._db.row("SELECT * FROM cerebros_jobs WHERE job_id = ?", (job_id,))
        if row is None:
            raise NotFound(self.name, f"no job {job_id}")
        return _job(row)

    def jobs(self, run_id: str | None = None) -> list[TrainingJob]:
        if run_id is None:
            rows = self._db.rows("SELECT * FROM cerebros_jobs ORDER BY run_id, trial")
        else:
            rows = self._db.rows("SELECT * FROM cerebros_jobs WHERE run_id = ? ORDER BY trial",
                                 (run_id,))
        return [_job(r) for r in rows]

    def running_jobs(self, run_id: str | None = None) -> list[TrainingJob]:
        """Jobs still holding compute (dispatched or running), of one run or all."""
        return [job for job in self.jobs(run_id) if job.active]


def _job(row: Any) -> TrainingJob:
    return TrainingJob(
        job_id=row["job_id"], run_id=row["run_id"], trial=int(row["trial"]),
        status=row["status"], idempotency_key=row["idempotency_key"],
        dispatched_at=row["dispatched_at"], updated_at=row["updated_at"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"])
