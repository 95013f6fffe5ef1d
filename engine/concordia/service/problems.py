"""Errors as RFC 9457 problem details: ``application/problem+json`` with a clear message.

Every error the service answers with is a :class:`Problem` (a status, a short stable
``type`` slug, a title, and a ``detail`` that says what went wrong and what to do), or is
turned into one here: FastAPI's request validation errors, Starlette's HTTP errors, the
engine's own errors, and anything unexpected (a 500 that shows no traceback).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from concordia.errors import (
    ConcordiaError,
    EventError,
    InputError,
    StoreError,
    UnknownRunError,
    UnknownSagaError,
    ValueLimitError,
)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://concordia.dev/problems/"
_log = structlog.get_logger("concordia.service")

_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
           411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
           421: "Misdirected Request", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}


class Problem(Exception):
    """An error answered as problem details; ``extra`` adds members (``field``, ...)."""

    def __init__(self, status: int, slug: str, detail: str, *,
                 title: str | None = None, headers: Mapping[str, str] | None = None,
                 **extra: Any) -> None:
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(detail)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": TYPE_BASE + self.slug, "title": self.title,
                               "status": self.status, "detail": self.detail}
        if instance:
            out["instance"] = instance
        out.update({k: v for k, v in self.extra.items() if v is not None})
        return out


def response(problem: Problem, instance: str | None = None) -> Response:
    return JSONResponse(problem.body(instance), status_code=problem.status,
                        media_type=MEDIA_TYPE, headers=problem.headers)


async def send_problem(send: Send, problem: Problem, instance: str, *,
                       close: bool = False) -> None:
    """Answer ``problem`` from ASGI middleware (before any route, so before FastAPI's
    handlers); ``close``: end the connection after it, so an unread body is not read."""
    data = json.dumps(problem.body(instance)).encode()
    headers = [(b"content-type", MEDIA_TYPE.encode()),
               (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in problem.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def from_engine_error(exc: ConcordiaError) -> Problem:
    """The problem an engine error means for a client."""
    if isinstance(exc, UnknownRunError):
        return Problem(404, "unknown-run", str(exc), run_id=exc.run_id)
    if isinstance(exc, UnknownSagaError):
        return Problem(404, "unknown-saga", str(exc), saga=exc.name)
    if isinstance(exc, InputError):
        return Problem(422, "invalid-input", str(exc), field=exc.field)
    if isinstance(exc, EventError):
        return Problem(422, "invalid-event", str(exc), field=exc.field,
                       event_type=exc.event_type)
    if isinstance(exc, ValueLimitError):
        return Problem(422, "value-limit", str(exc), field=exc.path or None)
    if isinstance(exc, StoreError):
        # What failed and where (host, database, schema) is for the log, not the client.
        return Problem(503, "store-unavailable", "the store is unavailable; try again later",
                       headers={"Retry-After": "5"})
    return Problem(409, "refused", str(exc))


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem details."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return response(exc, request.url.path)

    async def on_engine(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConcordiaError)
        if isinstance(exc, StoreError):
            _log.error("store.failed", path=request.url.path, error=str(exc)[:1000])
        return response(from_engine_error(exc), request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": "/".join(str(p) for p in e.get("loc", ())),
                   "message": str(e.get("msg", ""))} for e in exc.errors()[:20]]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        detail = f"{first['field'] or 'the request'}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return response(Problem(400, "malformed-json", f"the body is not JSON: {detail}",
                                    errors=errors), request.url.path)
        return response(Problem(_validation_status(exc), "invalid-request", detail,
                                field=first["field"] or None, errors=errors),
                        request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(
            exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}; GET /openapi.json lists them"
        return response(Problem(exc.status_code, slug, detail,
                                headers=getattr(exc, "headers", None)), request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        _log.error("request.failed", path=request.url.path, error=repr(exc)[:500])
        return response(Problem(500, "internal", "the server failed to handle the request; "
                                                 "its log says why"), request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(ConcordiaError, on_engine)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _validation_status(exc: RequestValidationError) -> int:
    """422 for a body that does not fit its model and for text the journal cannot keep
    (``value_limit``, wherever it was); 400 for parameters out of their shape."""
    errors = exc.errors()
    if any(e.get("loc", ("",))[0] == "body" or e.get("type") == "value_limit"
           for e in errors):
        return 422
    return 400


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problems a route can answer with."""
    return {status: {"description": _TITLES.get(status, "Error"),
                     "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
            for status in statuses}
