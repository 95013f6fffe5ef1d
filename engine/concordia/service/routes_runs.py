"""``/runs``: start runs (idempotently), list and read them, cancel and retry them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from concordia.errors import UnknownSagaError
from concordia.runtime.effects import adrive
from concordia.runtime.views import RunView
from concordia.service import idempotency, runs_json
from concordia.service.diagrams import draw
from concordia.service.problems import Problem, problem_responses
from concordia.service.state import Service, service_of
from concordia.status import RunStatus
from concordia.store.base import ConflictError
from concordia.store.records import RunRecord

router = APIRouter(tags=["runs"])
Svc = Annotated[Service, Depends(service_of)]
RunId = Annotated[str, Path(min_length=1, max_length=200, description="the run's id")]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"


class StartRun(BaseModel):
    """What to start: a saga by name (its latest version unless ``version`` is given),
    its input, and the correlation id to carry (a new one is made if none is given)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"saga": "checkout", "input": {"order_id": "o-1"}, "correlation_id": "req-7f3a"}]})
    saga: str = Field(min_length=1, max_length=200, pattern=_NAME)
    input: dict[str, Any] = Field(default_factory=dict)
    correlation_id: str | None = Field(default=None, min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


_RUN_LINKS = {name: {"operationId": op, "parameters": {"run_id": "$response.body#/id"}}
              for name, op in (("GetRun", "getRun"), ("GetRunGraph", "getRunGraph"),
                               ("CancelRun", "cancelRun"), ("RetryRun", "retryRun"))}


@router.post("/runs", status_code=201, summary="Start a run", operation_id="startRun",
             responses={201: {"description": "Started", "links": _RUN_LINKS},
                        200: {"description": "Started before, by a request with the same "
                                             "Idempotency-Key", "links": _RUN_LINKS},
                        **problem_responses(400, 404, 413, 422, 503)})
async def start_run(body: StartRun, svc: Svc, response: Response,
                    idempotency_key: Annotated[str | None, Header(
                        alias="Idempotency-Key", description="a retried request with the "
                        "same key starts one run, not two")] = None) -> dict[str, Any]:
    engine = svc.engine
    run_id = None
    if idempotency_key is not None:
        run_id = idempotency.run_id_for(idempotency.check_key(idempotency_key))
    try:
        view = await engine.start(body.saga, body.input, correlation_id=body.correlation_id,
                                  version=body.version, run_id=run_id)
    except ConflictError:
        if run_id is None:
            raise
        first = await engine.get_run(run_id)
        if not idempotency.same_request(first, body.saga, body.version, body.input,
                                        body.correlation_id):
            svc.metrics.runs_requested.labels("key_reused").inc()
            raise Problem(422, "idempotency-key-reused",
                          f"Idempotency-Key {idempotency_key!r} already started run {run_id} "
                          "with another request; use a new key for a new run",
                          run_id=run_id) from None
        svc.metrics.runs_requested.labels("replayed").inc()
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/runs/{run_id}"
        return runs_json.summary(first, _labels(svc, first))
    svc.metrics.runs_requested.labels("started").inc()
    response.headers["Location"] = f"/runs/{view.id}"
    return runs_json.summary(view, _labels(svc, view))


@router.get("/runs", summary="List runs, newest first", operation_id="listRuns",
            responses=problem_responses(400, 422))
async def list_runs(svc: Svc, request: Request,
                    saga: Annotated[str | None, Query(max_length=200)] = None,
                    status: RunStatus | None = None,
                    correlation_id: Annotated[str | None, Query(max_length=200)] = None,
                    before: Annotated[str | None, Query(
                        max_length=200, description="continue after this run id (the "
                        "`next` link of the previous page)")] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    records = await svc.engine.astore.read("page_runs", saga, status, correlation_id,
                                           before, limit + 1)
    more = len(records) > limit
    records = records[:limit]
    next_link = None
    if more:
        url = request.url.include_query_params(before=records[-1].id)
        next_link = f"{url.path}?{url.query}"
    return {"runs": [runs_json.summary(r, _labels(svc, r)) for r in records],
            "next": next_link}


@router.get("/runs/{run_id}", summary="A run: state, steps, errors, compensations, "
            "decisions, events and their causation chains", operation_id="getRun",
            responses=problem_responses(404))
async def get_run(run_id: RunId, svc: Svc) -> dict[str, Any]:
    engine = svc.engine
    view = await engine.get_run(run_id)
    received = []
    for event_id in runs_json.received_ids(view):
        envelope = await engine.astore.read("get_event", event_id)
        if envelope is not None:
            received.append(envelope)
    chains: dict[str, list[dict[str, Any]]] = {}
    for event in [*view.events, *received]:
        chains[event["id"]] = await engine.causation_chain(event["id"])
    if view.causation_id:
        chains[view.causation_id] = await engine.causation_chain(view.causation_id)
    return runs_json.detail(view, chains, _labels(svc, view), received)


@router.get("/runs/{run_id}/graph", summary="The run's saga diagram, coloured by the run",
            operation_id="getRunGraph",
            responses={200: {"content": {"image/svg+xml": {}, "text/plain": {}}},
                       **problem_responses(404)})
async def run_graph(run_id: RunId, svc: Svc,
                    format: Literal["svg", "mermaid"] = "svg") -> Response:
    view = await svc.engine.get_run(run_id)
    saga = svc.engine.core.book.of(view.saga, view.version).saga
    return _diagram(draw(saga, format, view), format)


@router.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a run (it compensates)",
             operation_id="cancelRun",
             responses=problem_responses(404, 409, 422))
async def cancel_run(run_id: RunId, body: CancelRun,
                     svc: Svc) -> dict[str, Any]:
    engine = svc.engine
    if svc.options.worker:
        view = await engine.cancel(run_id, body.reason)
    else:
        # No worker here: ask for the cancellation and leave the compensations to the
        # workers (the engine's own cancel would run them in this request).
        await adrive(engine.core.executor.request_cancel(run_id, body.reason), engine.astore,
                     engine.invoker, _no_send)
        view = await engine.get_run(run_id)
    return runs_json.summary(view, _labels(svc, view))


@router.post("/runs/{run_id}/retry", status_code=202,
             summary="Resume a run halted in compensation_failed or stuck",
             operation_id="retryRun",
             responses=problem_responses(404, 409))
async def retry_run(run_id: RunId, svc: Svc) -> dict[str, Any]:
    engine = svc.engine
    if svc.options.worker:
        view = await engine.retry(run_id)
    else:
        await adrive(engine.core.executor.retry(run_id), engine.astore, engine.invoker,
                     _no_send)
        view = await engine.get_run(run_id)
    return runs_json.summary(view, _labels(svc, view))


def _labels(svc: Service, run: RunView | RunRecord) -> dict[str, str]:
    """The run's saga's state names (none for a version this server cannot compile)."""
    try:
        return svc.engine.core.book.of(run.saga, run.version).labels
    except UnknownSagaError:
        return {}


async def _no_send(envelope: dict[str, Any]) -> None:
    return None


def _diagram(text: str, fmt: str) -> Response:
    media = "image/svg+xml" if fmt == "svg" else "text/plain; charset=utf-8"
    return Response(text, media_type=media)
