"""Operations: liveness (``/healthz``), readiness (``/readyz``: the store answers, and the
worker runs if this server has one) and Prometheus metrics (``/metrics``).

The two probes need no credential and show nothing of the runs or of where the store is
(its kind only); the metrics need ``concordia.read``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter
from pydantic import Field
from starlette.responses import Response
from typing_extensions import TypedDict

from concordia.errors import ConcordiaError
from concordia.service.guard import Access, access
from concordia.service.metrics import CONTENT_TYPE
from concordia.service.problems import Problem, problem_responses, response
from concordia.service.state import Svc
from concordia.status import RunStatus

router = APIRouter(tags=["operations"])
READY_TIMEOUT = 5.0
_log = structlog.get_logger("concordia.service")


class Health(TypedDict):
    """The process answers."""

    status: Literal["ok"]


class Readiness(TypedDict):
    """The store answers, and the worker runs if this server has one."""

    status: Literal["ready"]
    store: Annotated[str, Field(description="The store's kind (its URL's scheme: `sqlite`, "
                                            "`postgresql`, `memory`), nothing more")]
    worker: Annotated[bool, Field(description="Whether this server drives runs itself "
                                              "(else separate workers do)")]


@router.get("/healthz", summary="The process answers", openapi_extra=access(Access.HEALTH))
async def healthz() -> Health:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers (and the worker runs, if any)",
            response_model=Readiness, responses=problem_responses(503),
            openapi_extra=access(Access.HEALTH))
async def readyz(svc: Svc) -> Readiness | Response:
    problems = []
    try:
        await asyncio.wait_for(svc.engine.next_wake_at(), READY_TIMEOUT)
    except (ConcordiaError, OSError, TimeoutError) as exc:
        # Which store, and why, is for the log: this answer is for anyone who asks.
        _log.error("readiness.store_failed", error=str(exc)[:1000] or type(exc).__name__)
        problems.append("the store does not answer")
    task = svc.worker_task
    if svc.options.worker and (task is None or task.done()):
        problems.append("the worker is not running")
    if problems:
        return response(Problem(503, "not-ready", "; ".join(problems)))
    return {"status": "ready", "store": _kind(svc.engine.store.url),
            "worker": svc.options.worker}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "The metrics in Prometheus's text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **problem_responses(401, 403, 421, 503)},
            openapi_extra=access(Access.READ))
async def metrics(svc: Svc) -> Response:
    counts = await svc.engine.run_counts()
    backlog = await svc.engine.outbox_backlog()
    running = await svc.engine.list_runs(status=RunStatus.RUNNING, limit=_LEASES_READ)
    leases = [(r.saga, r.lease_owner, r.lease_expires) for r in running]
    return Response(svc.metrics.render(counts, backlog, leases=leases),
                    media_type=CONTENT_TYPE)


# Running runs read for their leases per scrape: a bound on the scrape's cost.
_LEASES_READ = 10_000


def _kind(url: str) -> str:
    """A store URL's scheme only (``sqlite``, ``postgresql``): no host, path or user."""
    return url.partition("://")[0] or "unknown"
