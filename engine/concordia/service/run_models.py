"""Runs as the API shows them: the models of a run's summary, its whole detail and a page
of runs, and the functions that build them from the engine's :class:`~concordia.RunView`.

A summary (for listings and for what start, cancel and retry answer) and a detail: the
steps with their attempts, results and compensations (a fan-out's items, shown as
``step[i]``, right after their step), the errors and the policy decisions, the history,
and the events the run emitted or received, each with its causation chain
(trigger → ... → the event). Times are RFC 3339 in UTC; statuses are the enums' plain
names.

Where a run stands is said as its saga says it (``charge``, ``reserve + notify``,
``undo charge``, ``compensated``), in ``state`` and in the history's state changes: the
compiled machine's own names (``run_1``, ``undo_0``) are the engine's business, not the
reader's, and they change meaning when a saga's steps are reordered.

What the journal keeps as data (a run's input, a step's result and checkpoint, a history
line's detail, an event's envelope, a decision's inputs) is answered as it was journaled:
the models type it as JSON and the OpenAPI document describes it.

The models are pydantic-typed ``TypedDict`` classes, not ``BaseModel`` ones: an answer is
built as plain dicts, which mypy checks against the model where they are built, FastAPI
checks once against the route's response model, and pydantic-core serializes. A
``BaseModel`` instance validates its fields when it is made (about 1 µs each); a run's
detail is made of dozens of them (a history line each), which cost a fifth more
instructions per ``GET /runs/{id}`` on the memory store; with these models, FastAPI's one
check of the whole answer costs about 8% (``bench/answers.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, WithJsonSchema, with_config
from typing_extensions import TypedDict

from concordia.runtime import views
from concordia.status import CompStatus, Kind, RunStatus, StepStatus
from concordia.store.records import Attempted, StepRecord
from concordia.timestamps import format_timestamp

ERROR_KINDS = (Kind.STEP_FAILED, Kind.STEP_RETRY_SCHEDULED, Kind.COMPENSATION_FAILED,
               Kind.COMPENSATION_RETRY_SCHEDULED, Kind.RUN_EMIT_FAILED,
               Kind.COMPENSATION_EMIT_FAILED, Kind.RUN_STUCK, Kind.AWAIT_TIMEOUT)

# An RFC 3339 date-time in UTC, kept as the text the engine wrote.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
# Any JSON value (a step's result, an item of a fan-out), answered as journaled.
Json = Annotated[Any, WithJsonSchema({})]
# A JSON object, answered as journaled.
JsonObject = dict[str, Any]

# A CloudEvents 1.0 envelope in structured mode, as journaled: the attributes the engine
# always writes, those it writes when set, and any extension attributes, untouched.
CLOUD_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "CloudEvent",
    "description": "A CloudEvents 1.0 event in structured mode, with the correlationid and "
                   "causationid extensions (and any other extension attributes it carries)",
    "required": ["specversion", "id", "source", "type", "time", "datacontenttype"],
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": {"type": "string"},
        "source": {"type": "string"},
        "type": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string"},
        "subject": {"type": "string"},
        "correlationid": {"type": "string"},
        "causationid": {"type": "string"},
        "data": {},
    },
    "additionalProperties": True,
}
CloudEvent = Annotated[JsonObject, WithJsonSchema(CLOUD_EVENT_SCHEMA)]


def _doc(text: str) -> Any:
    """A field's description in the OpenAPI document."""
    return Field(description=text)


class RunLinks(TypedDict):
    """Where to read the run, see it as a page, and draw it."""

    self: str
    page: str
    graph: str


class RunSummary(TypedDict):
    """A run without its steps and history: what listings show, and what starting,
    cancelling or retrying a run answers."""

    id: str
    saga: str
    version: Annotated[int, _doc("The saga's version the run is pinned to")]
    status: RunStatus
    state: Annotated[str, _doc("Where the run stands, as its saga names it (`charge`, "
                               "`undo charge`, `compensated`)")]
    correlation_id: str
    causation_id: Annotated[str | None, _doc("The id of the event that started the run "
                                             "(a trigger), if one did")]
    error: Annotated[str | None, _doc("Why the run failed or was compensated")]
    parent_run_id: Annotated[str | None, _doc("A child saga's run: the run that started it")]
    parent_step: Annotated[str | None, _doc("A child saga's run: the step of the parent run "
                                            "that started it")]
    created_at: Timestamp
    updated_at: Timestamp
    wake_at: Annotated[Timestamp | None, _doc("When a timer (a retry's wait, an await's "
                                              "deadline) wakes the run")]
    links: RunLinks


@with_config(ConfigDict(extra="allow"))
class ErrorDetail(TypedDict):
    """A step's last failure as structured data (after RFC 9457), as its handler
    described it."""

    type: str
    title: str
    status: Annotated[int | None, _doc("An HTTP-like status the handler gave its error")]
    message: str
    details: Annotated[JsonObject | None, _doc("The structured part, as the handler gave it")]


class StepCompensation(TypedDict):
    """Where a step's compensation stands (null until it has started)."""

    status: CompStatus
    attempt: int
    error: str | None


class Step(TypedDict):
    """One step of the run, or one item of a fan-out (named `step[i]`, right after its
    step): its attempts, its result or error, and its compensation."""

    name: str
    status: StepStatus
    attempt: Annotated[int, _doc("Attempts made so far (0: not started)")]
    result: Json
    checkpoint: Annotated[Json, _doc("What the handler made durable before its side "
                                     "effect, if it did")]
    error: str | None
    error_detail: ErrorDetail | None
    caught: Annotated[int | None, _doc("The index of the catch entry that took the step's "
                                       "failure, if one did")]
    items: Annotated[list[Json] | None, _doc(
        "A fan-out step's list, as evaluated when the step started (null for other steps "
        "and for the items themselves)")]
    started_at: Timestamp | None
    finished_at: Timestamp | None
    compensation: StepCompensation | None


class RunError(TypedDict):
    """A failure the history records: a step's or a compensation's attempt failing (for
    good or before a retry), an event that could not be emitted, an await's deadline
    passing, the engine giving up on the run."""

    at: Timestamp
    kind: Annotated[str, WithJsonSchema({"type": "string",
                                         "enum": [str(k) for k in ERROR_KINDS]})]
    step: str | None
    attempt: int | None
    error: Annotated[str | None, _doc("The error (for an await's timeout: the event type "
                                      "it awaited)")]


class Compensation(TypedDict):
    """A step's compensation; a run's are listed in the order they started."""

    step: str
    status: CompStatus
    attempt: int
    error: str | None


@with_config(ConfigDict(extra="allow"))
class Decision(TypedDict):
    """A policy's decision, as journaled with the run: what it decided, by which rule, why,
    and on which inputs."""

    decision_id: str
    policy: str
    policy_version: int
    rule: Annotated[str | None, _doc("The rule that decided (null: no rule matched and the "
                                     "policy's default decided)")]
    decision: Literal["approve", "reject"]
    reason: str
    inputs: JsonObject
    decided_at: Timestamp
    run_id: str
    step: Annotated[str, _doc("The policy step that asked")]


class CausationLink(TypedDict):
    """One event of a causation chain: its CloudEvents attributes, without its data."""

    id: str | None
    type: str | None
    source: str | None
    time: Timestamp | None
    correlationid: str | None
    causationid: str | None


class RunEvent(TypedDict):
    """An event the run emitted (`out`) or that resumed it (`in`), with its causation
    chain: from the first cause to the event itself."""

    event: CloudEvent
    direction: Literal["out", "in"]
    causation_chain: list[CausationLink]


class HistoryLine(TypedDict):
    """A line of the run's append-only history."""

    at: Timestamp
    kind: Annotated[str, _doc(
        "What happened: `run.started`, `step.started`, `step.succeeded`, `step.failed`, "
        "`compensation.started`, `await.resumed`, `state` (a move between two states, "
        "named as the saga names them), ... (the journal's history kinds)")]
    step: str | None
    attempt: int | None
    detail: JsonObject


class Lease(TypedDict):
    """The worker that holds the run, and until when."""

    owner: str
    expires: Timestamp | None


class RunDetail(RunSummary):
    """The whole run: its summary, and its input, steps, errors, compensations, policy
    decisions, events with their causation chains, history, cause and lease."""

    input: JsonObject
    steps: list[Step]
    errors: list[RunError]
    compensations: list[Compensation]
    decisions: list[Decision]
    events: Annotated[list[RunEvent], _doc("The events it emitted and those that resumed "
                                           "it, by time")]
    history: list[HistoryLine]
    cause: Annotated[list[CausationLink], _doc("The causation chain of the event that "
                                               "started the run (empty if none did)")]
    lease: Lease | None


class RunPage(TypedDict):
    """Runs, newest first, and the link to the next (older) page, null on the last."""

    runs: list[RunSummary]
    next: str | None


def summary(run: views.RunView, labels: Mapping[str, str] | None = None) -> RunSummary:
    """``run`` summarized; ``labels`` names the compiled machine's states as the saga does
    (``charge``, ``undo charge``)."""
    return {"id": run.id, "saga": run.saga, "version": run.version, "status": run.status,
            "state": (labels or {}).get(run.state, run.state),
            "correlation_id": run.correlation_id, "causation_id": run.causation_id,
            "error": run.error, "parent_run_id": run.parent_run_id,
            "parent_step": run.parent_step, "created_at": _time(run.created_at),
            "updated_at": _time(run.updated_at), "wake_at": when(run.wake_at),
            "links": {"self": f"/runs/{run.id}", "page": f"/ui/runs/{run.id}",
                      "graph": f"/runs/{run.id}/graph"}}


def detail(found: views.RunDetail, labels: Mapping[str, str] | None = None) -> RunDetail:
    """The run ``found`` read, with the causation chains it read (each event id's, oldest
    first) and the events that resumed it."""
    view, chains, names = found.view, found.chains, labels or {}
    compensations: list[Compensation] = [
        {"step": s.name, "status": s.comp_status, "attempt": s.comp_attempt,
         "error": s.comp_error} for s in view.steps if s.comp_status is not None]
    order = {h.step: i for i, h in enumerate(view.history)
             if h.kind == Kind.COMPENSATION_STARTED and h.step is not None}
    compensations.sort(key=lambda c: order.get(c["step"], len(order)))
    flows: list[tuple[Literal["out", "in"], dict[str, Any]]] = [
        *(("out", e) for e in view.events), *(("in", e) for e in found.received)]
    flows.sort(key=lambda f: str(f[1].get("time", "")))
    return {
        **summary(view, labels), "input": view.input,
        "steps": [_step(s) for s in view.steps],
        "errors": [{"at": _time(h.at), "kind": h.kind, "step": h.step, "attempt": h.attempt,
                    "error": h.detail.get("error") or h.detail.get("event")}
                   for h in view.history if h.kind in ERROR_KINDS],
        "compensations": compensations,
        # journaled as the engine wrote them (concordia.policies.DecisionRecord, with the
        # run and step); checked against the model with the rest of the answer
        "decisions": cast(list[Decision], view.decisions),
        "events": [{"event": e, "direction": direction,
                    "causation_chain": [_link(c) for c in chains.get(e["id"], [])]}
                   for direction, e in flows],
        "history": [{"at": _time(h.at), "kind": h.kind, "step": h.step, "attempt": h.attempt,
                     "detail": _named(h.kind, h.detail, names)} for h in view.history],
        "cause": [_link(c) for c in chains.get(view.causation_id or "", [])],
        "lease": ({"owner": view.lease_owner, "expires": when(view.lease_expires)}
                  if view.lease_owner else None)}


def when(at: float | None) -> str | None:
    """Engine clock seconds (if any) as an RFC 3339 timestamp."""
    return None if at is None else _time(at)


def _time(at: float) -> str:
    return format_timestamp(datetime.fromtimestamp(at, UTC))


def _step(s: Attempted) -> Step:
    compensation: StepCompensation | None = None
    if s.comp_status is not None:
        compensation = {"status": s.comp_status, "attempt": s.comp_attempt,
                        "error": s.comp_error}
    return {"name": s.name, "status": s.status, "attempt": s.attempt, "result": s.result,
            "checkpoint": s.checkpoint, "error": s.error,
            # the error as its handler described it (concordia.runtime.problem)
            "error_detail": cast(ErrorDetail | None, s.error_detail),
            "caught": s.caught, "items": s.items if isinstance(s, StepRecord) else None,
            "started_at": when(s.started_at), "finished_at": when(s.finished_at),
            "compensation": compensation}


def _link(envelope: Mapping[str, Any]) -> CausationLink:
    get = envelope.get
    return {"id": get("id"), "type": get("type"), "source": get("source"),
            "time": get("time"), "correlationid": get("correlationid"),
            "causationid": get("causationid")}


def _named(kind: str, detail: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """A history entry's detail with the machine's states named as the saga names them."""
    if kind != Kind.STATE:
        return detail
    return {**detail, **{k: labels.get(v, v) for k, v in detail.items()
                         if k in ("from", "to") and isinstance(v, str)}}
