"""What every route of one app shares: the engine, the credentials and webhook keys, the
metrics, the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from concordia.runtime.aengine import AsyncEngine
from concordia.service.credentials import Credentials
from concordia.service.guard import allowed_hosts
from concordia.service.limits import DEFAULT_MAX_BODY
from concordia.service.metrics import Metrics
from concordia.service.signatures import DEFAULT_TOLERANCE, KeyRing


@dataclass
class ServiceOptions:
    """How the app runs.

    - ``worker``: drive runs in this process (``engine.work`` in the app's lifespan);
      off for an API in front of separate ``concordia worker`` processes.
    - ``concurrency``: runs the worker drives at once.
    - ``max_body``: the largest request body taken, in bytes.
    - ``tolerance``: seconds a webhook signature's timestamp may be from this clock.
    - ``keys``: the active webhook secrets.
    - ``credentials``: the API tokens and JWT verifier that authenticate requests; with
      none, nothing does (every route but health and the page's shell answers 401),
      unless ``insecure_no_auth``, which lets every request through unauthenticated.
    - ``allowed_hosts``: the ``Host`` names answered (loopback names by default).
    """

    worker: bool = True
    concurrency: int = 8
    poll_interval: float = 0.5
    max_body: int = DEFAULT_MAX_BODY
    tolerance: float = DEFAULT_TOLERANCE
    keys: KeyRing = field(default_factory=KeyRing)
    credentials: Credentials = field(default_factory=Credentials)
    insecure_no_auth: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=allowed_hosts)


@dataclass
class Service:
    engine: AsyncEngine
    options: ServiceOptions
    metrics: Metrics
    worker_task: Any = None  # the asyncio task running engine.work(), while it runs


async def service_of(request: Request) -> Service:
    """The app's :class:`Service` (a FastAPI dependency; a coroutine, since FastAPI runs a
    plain function dependency in a worker thread, which costs more than the request)."""
    svc: Service = request.app.state.service
    return svc


# A route's parameter that receives the app's Service.
Svc = Annotated[Service, Depends(service_of)]
