"""The app factory: one :class:`AsyncEngine` per app, its worker in the app's lifespan.

``create_app(engine, options)`` builds the FastAPI app: the routes of :mod:`.routes_runs`,
:mod:`.routes_events`, :mod:`.routes_sagas`, :mod:`.routes_ops` and the page, errors as
problem details, the gate that checks Host, credentials, scopes and origins
(:mod:`.guard`) in front of every route, and behind it the body size limit. The lifespan starts
``engine.work(concurrency=N)`` as a task (unless ``options.worker`` is off: an API in
front of separate workers), and on shutdown stops it (the steps in hand finish, leases are
given up) and closes the engine. :func:`build_engine` makes the engine the command line
serves: definitions loaded strictly, handlers timed for the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.routing import Route

from concordia.registry import Registry
from concordia.runtime.aengine import AsyncEngine
from concordia.service import page, problems
from concordia.service.guard import SECURITY_SCHEMES, Guard, access_table
from concordia.service.limits import BodyLimit
from concordia.service.metrics import Metrics
from concordia.service.routes_events import router as events_router
from concordia.service.routes_failure_map import router as failure_map_router
from concordia.service.routes_ops import router as ops_router
from concordia.service.routes_runs import router as runs_router
from concordia.service.routes_sagas import router as sagas_router
from concordia.service.state import Service, ServiceOptions
from concordia.service.timing import ServerTiming
from concordia.version import __version__

_log = structlog.get_logger("concordia.service")

DESCRIPTION = """\
Start saga runs and look at them, deliver signed CloudEvents (a webhook that resumes
awaiting runs and starts triggered ones), read the sagas and their diagrams, and watch
the engine (health, readiness, Prometheus metrics). Errors are RFC 9457 problem details.
The page at /ui/ shows runs and sagas as pictures.

Every route but /healthz, /readyz and the page's static shell needs
`Authorization: Bearer <API token or JWT>` with the route's scope: `concordia.read` to read,
`concordia.operate` to start, cancel and retry runs (which take `application/json` bodies
only, from this origin only). POST /events is authenticated by its own signature.
"""


def create_app(engine: AsyncEngine, options: ServiceOptions | None = None, *,
               metrics: Metrics | None = None, own_engine: bool = True) -> FastAPI:
    """The HTTP API and page over ``engine`` (closed with the app when ``own_engine``)."""
    options = options or ServiceOptions()
    service = Service(engine, options, metrics or Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if options.worker:
            service.worker_task = asyncio.create_task(
                engine.work(concurrency=options.concurrency,
                            poll_interval=options.poll_interval))
        try:
            yield
        finally:
            await _shut_down(service, own_engine)

    # No /docs: FastAPI's Swagger UI loads its scripts from a CDN, and nothing this server
    # shows may depend on another host; /openapi.json is the document.
    app = FastAPI(title="Concordia", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    problems.install(app)
    routers = (runs_router, events_router, sagas_router, failure_map_router, ops_router,
               page.router)
    for router in routers:
        app.include_router(router)
    app.mount(page.STATIC_PATH, page.static_files(), name="static")
    _document_security(app)
    app.add_middleware(BodyLimit, max_body=options.max_body)
    # Before the body is read: a refusal reads nothing.
    document = next((r for r in app.routes
                     if isinstance(r, Route) and r.path == app.openapi_url), None)
    app.add_middleware(Guard, table=access_table(routers, page.STATIC_PATH, document))
    app.add_middleware(ServerTiming)  # outermost: the whole of the server's time
    return app


def _document_security(app: FastAPI) -> None:
    """Put the security schemes the routes name into the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _shut_down(service: Service, own_engine: bool) -> None:
    engine = service.engine
    task = service.worker_task
    if task is not None:
        engine.stop()
        try:
            await task
        except Exception as exc:  # the worker's own failure: reported, the close goes on
            _log.error("worker.failed", error=repr(exc)[:500])
        service.worker_task = None
    if own_engine:
        await engine.aclose()


def build_engine(store: str, definitions: Sequence[str], registry: Registry | None,
                 metrics: Metrics, *, worker: bool) -> AsyncEngine:
    """The engine ``concordia serve`` runs: strict definitions, timed handlers; runs it
    starts are claimed only when it drives them (``worker``)."""
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load_strict(list(definitions))
    timed = metrics.instrument(registry) if registry is not None else Registry()
    return AsyncEngine(catalog, timed, store, check_bindings=registry is not None,
                       claim_new_runs=None if worker else False)
