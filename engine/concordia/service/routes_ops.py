"""Operations: liveness (``/healthz``), readiness (``/readyz``: the store answers, and the
worker runs if this server has one) and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from concordia.errors import ConcordiaError
from concordia.service.metrics import CONTENT_TYPE
from concordia.service.problems import Problem, problem_responses, response
from concordia.service.state import Svc

router = APIRouter(tags=["operations"])
READY_TIMEOUT = 5.0


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers (and the worker runs, if any)",
            responses=problem_responses(503))
async def readyz(svc: Svc) -> Response:
    problems = []
    try:
        await asyncio.wait_for(svc.engine.astore.read("next_wake_at"), READY_TIMEOUT)
    except (ConcordiaError, OSError, TimeoutError) as exc:
        problems.append(f"the store does not answer: {exc or type(exc).__name__}")
    task = svc.worker_task
    if svc.options.worker and (task is None or task.done()):
        problems.append("the worker is not running")
    if problems:
        return response(Problem(503, "not-ready", "; ".join(problems)))
    return JSONResponse({"status": "ready", "store": _redacted(svc.engine.store.url),
                         "worker": svc.options.worker})


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(svc: Svc) -> Response:
    astore = svc.engine.astore
    counts = await astore.read("run_counts")
    backlog = await astore.read("outbox_backlog")
    running = await astore.read("list_runs", "running", None, _LEASES_READ)
    leases = [(r.saga, r.lease_owner, r.lease_expires) for r in running]
    return Response(svc.metrics.render(counts, backlog, leases=leases),
                    media_type=CONTENT_TYPE)


# Running runs read for their leases per scrape: a bound on the scrape's cost.
_LEASES_READ = 10_000


def _redacted(url: str) -> str:
    """A store URL without its password (postgresql://user:secret@host/db)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"
