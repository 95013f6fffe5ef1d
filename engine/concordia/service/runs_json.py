"""Runs as the API shows them: JSON made from the engine's :class:`RunView`.

A summary (for listings) and a detail: the steps with their attempts, results and
compensations, the errors and the policy decisions, the history, and the events the run
emitted, each with its causation chain (trigger → ... → the event). Times are RFC 3339
in UTC; statuses are the enums' plain names.

Where a run stands is said as its saga says it (``charge``, ``reserve + notify``,
``undo charge``, ``compensated``), in ``state`` and in the history's state changes: the
compiled machine's own names (``run_1``, ``undo_0``) are the engine's business, not the
reader's, and they change meaning when a saga's steps are reordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from concordia.runtime.views import RunView
from concordia.status import Kind
from concordia.store.records import Attempted, StepRecord
from concordia.timestamps import format_timestamp

_ERROR_KINDS = (Kind.STEP_FAILED, Kind.STEP_RETRY_SCHEDULED, Kind.COMPENSATION_FAILED,
                Kind.COMPENSATION_RETRY_SCHEDULED, Kind.RUN_EMIT_FAILED,
                Kind.COMPENSATION_EMIT_FAILED, Kind.RUN_STUCK, Kind.AWAIT_TIMEOUT)


def when(at: float | None) -> str | None:
    """Engine clock seconds as an RFC 3339 timestamp."""
    return None if at is None else format_timestamp(datetime.fromtimestamp(at, UTC))


def summary(run: RunView, labels: Mapping[str, str] | None = None
            ) -> dict[str, Any]:
    """A run without its steps and history; ``labels`` names the compiled machine's states
    as the saga does (``charge``, ``undo charge``)."""
    return {"id": run.id, "saga": run.saga, "version": run.version,
            "status": str(run.status), "state": (labels or {}).get(run.state, run.state),
            "correlation_id": run.correlation_id, "causation_id": run.causation_id,
            "error": run.error, "parent_run_id": run.parent_run_id,
            "parent_step": run.parent_step, "created_at": when(run.created_at),
            "updated_at": when(run.updated_at), "wake_at": when(run.wake_at),
            "links": {"self": f"/runs/{run.id}", "page": f"/ui/runs/{run.id}",
                      "graph": f"/runs/{run.id}/graph"}}


def step_json(s: Attempted) -> dict[str, Any]:
    compensation = None
    if s.comp_status is not None:
        compensation = {"status": str(s.comp_status), "attempt": s.comp_attempt,
                        "error": s.comp_error}
    return {"name": s.name, "status": str(s.status), "attempt": s.attempt,
            "result": s.result, "checkpoint": s.checkpoint, "error": s.error,
            # the error as its handler described it (type, title, status, details)
            "error_detail": s.error_detail, "caught": s.caught,
            "items": s.items if isinstance(s, StepRecord) else None,
            "started_at": when(s.started_at), "finished_at": when(s.finished_at),
            "compensation": compensation}


def detail(view: RunView, chains: dict[str, list[dict[str, Any]]],
           labels: Mapping[str, str] | None = None,
           received: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole run; ``chains`` maps an event id to its causation chain (oldest first);
    ``received`` are the events that resumed it, ``events`` those it emitted."""
    names = labels or {}
    history = [{"at": when(h.at), "kind": str(h.kind), "step": h.step, "attempt": h.attempt,
                "detail": _named(h.kind, h.detail, names)} for h in view.history]
    errors = [{"at": when(h.at), "kind": str(h.kind), "step": h.step, "attempt": h.attempt,
               "error": h.detail.get("error") or h.detail.get("event")}
              for h in view.history if h.kind in _ERROR_KINDS]
    compensations = [{"step": s.name, "status": str(s.comp_status), "attempt": s.comp_attempt,
                      "error": s.comp_error} for s in view.steps if s.comp_status is not None]
    order = {h.step: i for i, h in enumerate(view.history)
             if h.kind == Kind.COMPENSATION_STARTED and h.step is not None}
    compensations.sort(key=lambda c: order.get(str(c["step"]), len(order)))
    flows = [("out", e) for e in view.events] + [("in", e) for e in received or []]
    flows.sort(key=lambda f: str(f[1].get("time", "")))
    events = [{"event": e, "direction": direction,
               "causation_chain": [_link(c) for c in chains.get(e["id"], [])]}
              for direction, e in flows]
    out = summary(view, labels)
    out.update({"input": view.input, "steps": [step_json(s) for s in view.steps],
                "errors": errors, "compensations": compensations,
                "decisions": view.decisions, "events": events, "history": history,
                "cause": [_link(c) for c in chains.get(view.causation_id or "", [])],
                "lease": ({"owner": view.lease_owner, "expires": when(view.lease_expires)}
                          if view.lease_owner else None)})
    return out


def _named(kind: str, detail: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """A history entry's detail with the machine's states named as the saga names them."""
    if kind != Kind.STATE:
        return detail
    return {**detail, **{k: labels.get(v, v) for k, v in detail.items()
                         if k in ("from", "to") and isinstance(v, str)}}


def _link(envelope: dict[str, Any]) -> dict[str, Any]:
    return {"id": envelope.get("id"), "type": envelope.get("type"),
            "source": envelope.get("source"), "time": envelope.get("time"),
            "correlationid": envelope.get("correlationid"),
            "causationid": envelope.get("causationid")}
