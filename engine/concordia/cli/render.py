"""Runs as text for people: timestamps, step names, short ids, tables that fit 80 columns.

Times are ISO 8601, in the local zone with its offset (``--utc``: UTC, ``Z``). States are
named as the saga names them: the steps of the stage a run is in (``charge``,
``reserve + notify``), ``undo charge`` while compensating, or the end state
(``compensated``); the machine's internal ids (``run_1``) never show. Run ids are shortened
to the shortest prefix that still names one run, which ``inspect`` accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from concordia.status import COMP_IN_HAND, STEP_IN_HAND, CompStatus, RunStatus, StepStatus

if TYPE_CHECKING:
    from concordia.definitions.models import Saga
    from concordia.runtime.views import RunView
    from concordia.store.records import Attempted, HistoryEntry

MIN_ID = 8


@dataclass(frozen=True)
class Times:
    """How times are shown: local zone (with offset) or UTC."""

    utc: bool = False

    def stamp(self, at: float | None, *, precise: bool = True) -> str:
        """``2026-11-29T21:47:03.120+01:00`` (``precise=False``: to the minute)."""
        if at is None:
            return "-"
        moment = datetime.fromtimestamp(at, UTC)
        if not self.utc:
            moment = moment.astimezone()
        text = moment.isoformat(timespec="milliseconds" if precise else "minutes")
        return text.replace("+00:00", "Z") if self.utc else text

    def until(self, at: float, now: float) -> str:
        """``2026-11-29T22:47:03.120+01:00 (in 59m 58s)``."""
        return f"{self.stamp(at)} ({relative(at - now)})"


def relative(seconds: float) -> str:
    """``in 5m 3s`` or ``2h 1m ago``."""
    ahead = seconds >= 0
    left = abs(int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    text = " ".join(parts)
    return f"in {text}" if ahead else f"{text} ago"


def state_label(state: str, saga: Saga | None) -> str:
    """The state as the saga names it: a stage's steps, ``undo <steps>``, or the end."""
    kind, _, index = state.partition("_")
    if saga is None or kind not in ("run", "undo") or not index.isdigit():
        return state
    from concordia.machine.compile import stages_of

    stages = stages_of(saga)
    stage = int(index)
    if stage >= len(stages):
        return state
    names = " + ".join(stages[stage] if kind == "run" else reversed(stages[stage]))
    return names if kind == "run" else f"undo {names}"


def short_ids(ids: Sequence[str], unique: Callable[[str], bool] | None = None
              ) -> dict[str, str]:
    """The shortest prefix (at least :data:`MIN_ID` characters) of each id that no other id
    shown shares; ``unique(prefix) -> bool`` may confirm it against the whole store."""
    out: dict[str, str] = {}
    for run_id in ids:
        size = MIN_ID
        while size < len(run_id) and any(
                other != run_id and other.startswith(run_id[:size]) for other in ids):
            size += 1
        while unique is not None and size < len(run_id) and not unique(run_id[:size]):
            size += 1
        out[run_id] = run_id[:size]
    return out


def compact_json(value: Any, limit: int = 48) -> str:
    text = json.dumps(value, separators=(", ", ": "), default=str, ensure_ascii=False)
    return cut(text, limit)


def cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def history_line(entry: HistoryEntry, times: Times, saga: Saga | None = None) -> str:
    """One line of a run's history: time, what happened, the step and attempt, details.

    A move of the machine is shown with the states named as the saga names them.
    """
    where = ""
    if entry.step:
        where = entry.step + (f" #{entry.attempt}" if entry.attempt else "")
    details = dict(entry.detail)
    if entry.kind == "state" and {"from", "to"} <= set(details):
        move = (f"{state_label(str(details.pop('from')), saga)} -> "
                f"{state_label(str(details.pop('to')), saga)}")
        event = details.pop("event", None)
        where = move + (f" ({event})" if event else "")
    detail = ", ".join(f"{k}={_scalar(v)}" for k, v in details.items())
    parts = [times.stamp(entry.at), f"{entry.kind:<24}", where]
    if detail:
        parts.append(cut(detail, 160))
    return "  ".join(p for p in parts if p).rstrip()


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def waiting_on(view: RunView, saga: Saga | None, times: Times, now: float) -> str | None:
    """What a run that is not moving waits for: an event (and its deadline) or a timer."""
    from concordia.definitions.models import AwaitStep, SagaStep

    if view.status == RunStatus.SUSPENDED:
        awaits = [s for s in view.steps
                  if s.status == StepStatus.AWAITING or s.comp_status == CompStatus.AWAITING]
        parts: list[str] = []
        for rec in awaits:
            step = saga_step(saga, rec.name)
            deadline = f" until {times.until(rec.wake_at, now)}" if rec.wake_at else ""
            if isinstance(step, SagaStep):
                child = child_run_id(rec)
                what = "to undo itself" if rec.comp_status == CompStatus.AWAITING else "to end"
                parts.append(f"step {rec.name} waits for child saga {step.saga} (run "
                             f"{child}) {what}{deadline}")
                continue
            event = step.event if isinstance(step, AwaitStep) else "an event"
            parts.append(f"step {rec.name} awaits {event}{deadline}")
        return "; ".join(parts) or "an event"
    if view.status == RunStatus.WAITING and view.wake_at is not None:
        retrying = [s for s in view.steps if s.status == StepStatus.WAITING_RETRY
                    or s.comp_status == CompStatus.WAITING_RETRY]
        what = ", ".join(
            f"compensation of {s.name} (attempt {s.comp_attempt + 1})"
            if s.comp_status == CompStatus.WAITING_RETRY
            else f"{s.name} (attempt {s.attempt + 1})" for s in retrying) or "the next step"
        return f"retry of {what} at {times.until(view.wake_at, now)}"
    return None


def child_run_id(rec: Any) -> Any:
    """The id of the child run a saga step started (in its checkpoint), if it did."""
    return rec.checkpoint.get("run_id") if isinstance(rec.checkpoint, dict) else None


def saga_step(saga: Saga | None, name: str) -> Any:
    """The step ``name`` of ``saga``; None when either is unknown (a run of a version
    no longer loaded, a step renamed since)."""
    if saga is None:
        return None
    try:
        return saga.step(name)
    except KeyError:
        return None


def step_in_hand(view: RunView, saga: Saga | None) -> str:
    """The step a run is at now, as a short phrase for progress lines."""
    active = [s for s in view.steps if s.status in STEP_IN_HAND]
    undoing = [s for s in view.steps
               if s.comp_status in COMP_IN_HAND]
    if undoing:
        return "undoing " + ", ".join(s.name for s in undoing)
    if active:
        # A step waiting to retry is about to make its next attempt.
        return ", ".join(
            f"{s.name} (attempt {max(s.attempt, 1) + (s.status == StepStatus.WAITING_RETRY)})"
            for s in active)
    return state_label(view.state, saga)


def step_row(rec: Attempted) -> tuple[str, str, str, str, str]:
    """(step, status, tries, compensation, result or error) of the steps table."""
    shown = rec.result if rec.result is not None else rec.checkpoint
    outcome = rec.error or (compact_json(shown) if shown is not None else "")
    comp = "-" if rec.comp_status is None else f"{rec.comp_status} ({rec.comp_attempt})"
    if rec.comp_error:
        comp += f": {rec.comp_error}"
    return rec.name, rec.status, str(rec.attempt), cut(comp, 40), cut(outcome, 60)
