"""How the SQL stores (SQLite, PostgreSQL) encode records as rows: a step record as a
compact JSON array, history lines as arrays, a run from its columns.

Both stores share these so their journals read back the same; this module imports no
database driver, so a PostgreSQL worker never loads SQLite's and the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.records import HistoryEntry, RunRecord, StepRecord

# A step record: a JSON array in this field order (compact, and the cheapest shape to
# write and read).
STEP_FIELDS = ("status", "attempt", "result", "checkpoint", "error", "wake_at", "comp_status",
               "comp_attempt", "comp_error", "started_at", "finished_at", "error_detail",
               "caught", "items")
encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_RUN_STATUS = {s.value: s for s in RunStatus}
_STEP_STATUS = {s.value: s for s in StepStatus}
_COMP_STATUS: dict[str | None, CompStatus | None] = {
    None: None, **{s.value: s for s in CompStatus}}


def dumps(value: Any) -> str | None:
    return None if value is None else encode(value)


def step_row(s: StepRecord) -> list[Any]:
    return [s.status, s.attempt, s.result, s.checkpoint, s.error, s.wake_at, s.comp_status,
            s.comp_attempt, s.comp_error, s.started_at, s.finished_at, s.error_detail,
            s.caught, s.items]


def history_rows(history: Sequence[HistoryEntry]) -> list[list[Any]]:
    return [[h.at, h.kind, h.step, h.attempt, h.detail] for h in history]


def step_from(name: str, f: list[Any]) -> StepRecord:
    # Rows written before the language's constructs end at finished_at; the fields after
    # it take their defaults.
    return StepRecord(name, _STEP_STATUS[f[0]], f[1], f[2], f[3], f[4], f[5],
                      _COMP_STATUS[f[6]], f[7], f[8], f[9], f[10], *f[11:14])


def steps_from(text: str | None) -> dict[str, StepRecord]:
    if not text:
        return {}
    return {name: step_from(name, fields) for name, fields in json.loads(text).items()}


# A run's columns, in the order both SQL stores select them and run_from reads them.
RUN_COLS = ("id, saga, version, status, state, input, correlation_id, causation_id, cause, "
            "created_at, updated_at, wake_at, error, cancel_reason, compensated_any, rev, "
            "lease_owner, lease_expires, parent_run_id, parent_step")


def run_from(r: Sequence[Any]) -> RunRecord:
    """A run from its columns, in the order both stores select them (the parent's, for a
    child saga, last)."""
    return RunRecord(id=r[0], saga=r[1], version=r[2], status=_RUN_STATUS[r[3]], state=r[4],
                     input=json.loads(r[5]), correlation_id=r[6], causation_id=r[7], cause=r[8],
                     created_at=r[9], updated_at=r[10], wake_at=r[11], error=r[12],
                     cancel_reason=r[13], compensated_any=bool(r[14]), rev=r[15],
                     lease_owner=r[16], lease_expires=r[17], parent_run_id=r[18],
                     parent_step=r[19])
