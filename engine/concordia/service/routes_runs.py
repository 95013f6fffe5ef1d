"""``/runs``: start runs (idempotently), list and read them, cancel and retry them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from concordia.runtime.views import RunView
from concordia.service import idempotency
from concordia.service.bodies import body_schema, json_body
from concordia.service.diagrams import DIAGRAM_RESPONSE, diagram_response, draw
from concordia.service.fields import MAX_NAME, Text, check_json
from concordia.service.guard import Access, access
from concordia.service.problems import Problem, problem_responses
from concordia.service.run_models import RunDetail, RunPage, RunSummary, detail, summary
from concordia.service.state import Service, Svc
from concordia.status import RunStatus
from concordia.store.base import ConflictError

router = APIRouter(tags=["runs"])
RunId = Annotated[Text, Path(min_length=1, max_length=MAX_NAME, description="the run's id")]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"


class StartRun(BaseModel):
    """What to start: a saga by name (its latest version unless ``version`` is given),
    its input, and the correlation id to carry (a new one is made if none is given)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"saga": "checkout", "input": {"order_id": "o-1"}, "correlation_id": "req-7f3a"}]})
    saga: str = Field(min_length=1, max_length=MAX_NAME, pattern=_NAME)
    input: dict[str, Any] = Field(default_factory=dict)
    correlation_id: Text | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CancelRun(BaseModel):
    """Why the run is cancelled (kept in its journal)."""

    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=2000)


class RetryRun(BaseModel):
    """Nothing to say: a retry's body is empty or ``{}`` (it must still be sent as
    ``application/json``, which no cross-site form can)."""

    model_config = ConfigDict(extra="forbid")


_RUN_LINKS = {name: {"operationId": op, "parameters": {"run_id": "$response.body#/id"}}
              for name, op in (("GetRun", "getRun"), ("GetRunGraph", "getRunGraph"),
                               ("CancelRun", "cancelRun"), ("RetryRun", "retryRun"))}


_DENIED = (401, 403, 421)
_OPERATE_DENIED = (*_DENIED, 415)


@router.post("/runs", status_code=201, summary="Start a run", operation_id="startRun",
             responses={201: {"description": "Started", "links": _RUN_LINKS},
                        200: {"description": "Started before, by a request with the same "
                                             "Idempotency-Key", "links": _RUN_LINKS,
                              "model": RunSummary},
                        **problem_responses(400, 404, 413, 422, 503, *_OPERATE_DENIED)},
             openapi_extra={**access(Access.OPERATE), **body_schema(StartRun)})
async def start_run(body: Annotated[StartRun, Depends(json_body(StartRun))], svc: Svc,
                    response: Response,
                    idempotency_key: Annotated[str | None, Header(
                        alias="Idempotency-Key", description="a retried request with the "
                        "same key starts one run, not two")] = None) -> RunSummary:
    engine = svc.engine
    check_json(body.input, "body/input")
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
        return summary(first, _labels(svc, first))
    svc.metrics.runs_requested.labels("started").inc()
    response.headers["Location"] = f"/runs/{view.id}"
    return summary(view, _labels(svc, view))


@router.get("/runs", summary="List runs, newest first", operation_id="listRuns",
            responses=problem_responses(400, 422, 503, *_DENIED),
            openapi_extra=access(Access.READ))
async def list_runs(svc: Svc, request: Request,
                    saga: Annotated[Text | None, Query(max_length=MAX_NAME)] = None,
                    status: RunStatus | None = None,
                    correlation_id: Annotated[Text | None, Query(max_length=MAX_NAME)] = None,
                    before: Annotated[Text | None, Query(
                        max_length=MAX_NAME, description="continue after this run id (the "
                        "`next` link of the previous page)")] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunPage:
    page = await svc.engine.page_runs(saga=saga, status=status,
                                      correlation_id=correlation_id, before=before,
                                      limit=limit + 1)
    if page is None:  # an empty page would read as "no older runs"
        raise Problem(400, "unknown-cursor", f"before={before!r} names no run in the store; "
                                             "continue with the `next` link of the page "
                                             "before", field="query/before")
    records = page
    more = len(records) > limit
    records = records[:limit]
    next_link = None
    if more:
        url = request.url.include_query_params(before=records[-1].id)
        next_link = f"{url.path}?{url.query}"
    return {"runs": [summary(r, _labels(svc, r)) for r in records], "next": next_link}


@router.get("/runs/{run_id}", summary="A run: state, steps, errors, compensations, "
            "decisions, events and their causation chains", operation_id="getRun",
            responses=problem_responses(400, 404, 422, 503, *_DENIED),
            openapi_extra=access(Access.READ))
async def get_run(run_id: RunId, svc: Svc) -> RunDetail:
    found = await svc.engine.run_detail(run_id)
    return detail(found, _labels(svc, found.view))


@router.get("/runs/{run_id}/graph", summary="The run's saga diagram, coloured by the run",
            operation_id="getRunGraph", response_class=Response,
            responses={200: DIAGRAM_RESPONSE,
                       **problem_responses(400, 404, 422, 503, *_DENIED)},
            openapi_extra=access(Access.READ))
async def run_graph(run_id: RunId, svc: Svc,
                    format: Literal["svg", "mermaid"] = "svg") -> Response:
    view = await svc.engine.get_run(run_id)
    saga = svc.engine.definition(view.saga, view.version)
    return diagram_response(draw(saga, format, view), format)


@router.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a run (it compensates)",
             operation_id="cancelRun",
             responses=problem_responses(400, 404, 409, 422, 503, *_OPERATE_DENIED),
             openapi_extra={**access(Access.OPERATE), **body_schema(CancelRun)})
async def cancel_run(run_id: RunId, body: Annotated[CancelRun, Depends(json_body(CancelRun))],
                     svc: Svc) -> RunSummary:
    # No worker here: the cancellation is recorded and the compensations are left to the
    # workers (they would otherwise run in this request).
    view = await svc.engine.cancel(run_id, body.reason, advance=svc.options.worker)
    return summary(view, _labels(svc, view))


@router.post("/runs/{run_id}/retry", status_code=202,
             summary="Resume a run halted in compensation_failed or stuck",
             operation_id="retryRun",
             responses=problem_responses(400, 404, 409, 422, 503, *_OPERATE_DENIED),
             openapi_extra={**access(Access.OPERATE), **body_schema(RetryRun, required=False)})
async def retry_run(run_id: RunId, _body: Annotated[RetryRun, Depends(json_body(
                        RetryRun, empty=True))], svc: Svc) -> RunSummary:
    view = await svc.engine.retry(run_id, advance=svc.options.worker)
    return summary(view, _labels(svc, view))


def _labels(svc: Service, run: RunView) -> dict[str, str]:
    """The run's saga's state names (none for a version this server cannot compile)."""
    return svc.engine.state_labels(run.saga, run.version)


