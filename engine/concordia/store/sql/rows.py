"""How the SQL stores lay records out as rows: a run, a step and a fan-out's item as typed
columns (named here once, for every statement and both dialects), JSON values as compact
text, a commit's history lines as one JSON text.

This module imports no database driver, so a PostgreSQL worker never loads SQLite's and
the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.records import HistoryEntry, ItemRecord, RunRecord, StepRecord

# JSON as written: compact, and never NaN (which is not JSON).
encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_RUN_STATUS = {s.value: s for s in RunStatus}
_STEP_STATUS = {s.value: s for s in StepStatus}
_COMP_STATUS: dict[str | None, CompStatus | None] = {
    None: None, **{s.value: s for s in CompStatus}}


def dumps(value: Any) -> str | None:
    """A JSON value as text (None, SQL's NULL, for JSON's null)."""
    return None if value is None else encode(value)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- runs ------------------------------------------------------------------------------------

RUN_COLUMNS = ("id", "saga", "version", "status", "state", "input", "correlation_id",
               "causation_id", "cause", "created_at", "updated_at", "wake_at", "error",
               "cancel_reason", "compensated_any", "rev", "lease_owner", "lease_expires",
               "parent_run_id", "parent_step")
RUN_COLS = ", ".join(RUN_COLUMNS)
# What a commit writes of a run it did not create, beside the revision, the cancellation
# (kept if asked meanwhile), the status and the wake time; the rest never changes after the
# run's creation. The status and wake time queue a run (they are indexed, and most commits
# leave them as they were): a dialect may leave them out of an update that does not
# change them (SQLite rewrites an index entry for every indexed column assigned).
RUN_CHANGES = ("state", "cause", "updated_at", "error", "compensated_any", "lease_owner",
               "lease_expires")


def run_values(run: RunRecord) -> tuple[Any, ...]:
    """A run's columns, in :data:`RUN_COLUMNS` order."""
    return (run.id, run.saga, run.version, run.status.value, run.state, encode(run.input),
            run.correlation_id, run.causation_id, run.cause, run.created_at, run.updated_at,
            run.wake_at, run.error, run.cancel_reason, bool(run.compensated_any), run.rev,
            run.lease_owner, run.lease_expires, run.parent_run_id, run.parent_step)


def change_values(run: RunRecord) -> tuple[Any, ...]:
    """A run's :data:`RUN_CHANGES` columns."""
    return (run.state, run.cause, run.updated_at, run.error, bool(run.compensated_any),
            run.lease_owner, run.lease_expires)


def run_from(r: Sequence[Any]) -> RunRecord:
    """A run from its columns in :data:`RUN_COLUMNS` order."""
    return RunRecord(id=r[0], saga=r[1], version=r[2], status=_RUN_STATUS[r[3]], state=r[4],
                     input=json.loads(r[5]), correlation_id=r[6], causation_id=r[7], cause=r[8],
                     created_at=r[9], updated_at=r[10], wake_at=r[11], error=r[12],
                     cancel_reason=r[13], compensated_any=bool(r[14]), rev=r[15],
                     lease_owner=r[16], lease_expires=r[17], parent_run_id=r[18],
                     parent_step=r[19])


# -- steps and items -------------------------------------------------------------------------

# The journal of attempts, which steps and items share (their key columns aside).
ATTEMPT_COLUMNS = ("status", "attempt", "result", "checkpoint", "error", "wake_at",
                   "comp_status", "comp_attempt", "comp_error", "started_at", "finished_at",
                   "error_detail", "caught")
# A step's row: its run's key (``runs.num``), its name, its attempts, a fan-out's list.
STEP_KEY = ("run", "name")
STEP_COLUMNS = ("name", *ATTEMPT_COLUMNS, "items")
# An item's row: its run's key, its step's name, its index in the step's list.
ITEM_KEY = ("run", "step", "idx")
ITEM_COLUMNS = ("step", "idx", *ATTEMPT_COLUMNS)
# Columns holding JSON text (a patch's values for them are encoded).
JSON_COLUMNS = frozenset({"input", "result", "checkpoint", "error_detail", "items"})
# Columns that are not text, by kind (a dialect that types its parameters needs them).
INTEGER_COLUMNS = frozenset({"version", "rev", "attempt", "comp_attempt", "caught", "idx",
                             "run", "num"})
REAL_COLUMNS = frozenset({"created_at", "updated_at", "wake_at", "lease_expires",
                          "started_at", "finished_at"})


def _attempts(r: StepRecord | ItemRecord) -> tuple[Any, ...]:
    return (r.status.value, r.attempt, dumps(r.result), dumps(r.checkpoint), r.error,
            r.wake_at, None if r.comp_status is None else r.comp_status.value, r.comp_attempt,
            r.comp_error, r.started_at, r.finished_at, dumps(r.error_detail), r.caught)


def step_values(s: StepRecord) -> tuple[Any, ...]:
    """A step's columns, in :data:`STEP_COLUMNS` order."""
    return (s.name, *_attempts(s), dumps(s.items))


def item_values(i: ItemRecord) -> tuple[Any, ...]:
    """An item's columns, in :data:`ITEM_COLUMNS` order."""
    return (i.step, i.index, *_attempts(i))


def step_from(r: Sequence[Any]) -> StepRecord:
    """A step from its columns in :data:`STEP_COLUMNS` order."""
    return StepRecord(r[0], _STEP_STATUS[r[1]], r[2], loads(r[3]), loads(r[4]), r[5], r[6],
                      _COMP_STATUS[r[7]], r[8], r[9], r[10], r[11], loads(r[12]), r[13],
                      loads(r[14]))


def item_from(r: Sequence[Any]) -> ItemRecord:
    """An item from its columns in :data:`ITEM_COLUMNS` order."""
    return ItemRecord(r[0], r[1], _STEP_STATUS[r[2]], r[3], loads(r[4]), loads(r[5]), r[6],
                      r[7], _COMP_STATUS[r[8]], r[9], r[10], r[11], r[12], loads(r[13]), r[14])


def column_value(column: str, value: Any) -> Any:
    """A value a patch sets, as its column holds it."""
    if column in JSON_COLUMNS:
        return dumps(value)
    if isinstance(value, RunStatus | StepStatus | CompStatus):
        return value.value
    return value


# -- history ---------------------------------------------------------------------------------


def history_text(history: Iterable[HistoryEntry]) -> str | None:
    """Lines of a run's history as one JSON array of ``[at, kind, step, attempt, detail]``
    (None: no lines). History is read whole, in order, and never searched, so a commit's
    lines go to the store as one value."""
    lines = [[h.at, h.kind, h.step, h.attempt, h.detail] for h in history]
    return encode(lines) if lines else None


def history_from(run_id: str, texts: Iterable[str]) -> list[HistoryEntry]:
    """The lines of :func:`history_text` values, in order."""
    return [HistoryEntry(run_id, *line) for text in texts for line in json.loads(text)]
