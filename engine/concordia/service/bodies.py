"""JSON request bodies: read with the one strict parser, then validated by their model.

FastAPI would parse a body with ``json.loads``, which keeps the last of two equal keys:
``{"saga": "a", ..., "saga": "b"}`` would start ``b`` where ``concordia`` refuses the
same bytes. A route takes its body through :func:`json_body` instead: the bytes go
through :func:`concordia.definitions.jsonsafe.load_json` (400 ``malformed-json`` naming
the fault and where), then the model (422 ``invalid-request`` naming each field, as
FastAPI's own validation errors do). :func:`body_schema` puts the model in the OpenAPI
document, where FastAPI would have. The content type was checked before (:mod:`.guard`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from concordia.definitions.jsonsafe import JsonLoadError, load_json
from concordia.service.problems import Problem

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M], *, empty: bool = False) -> Callable[[Request], Awaitable[M]]:
    """A dependency that gives the request's body as a ``model``; ``empty``: a request
    with no body stands for ``{}``."""

    async def read(request: Request) -> M:
        raw = await request.body()
        data: Any = {}
        if raw.strip() or not empty:
            try:
                data = load_json(raw)
            except JsonLoadError as exc:
                raise Problem(400, "malformed-json", f"the body is not JSON: {exc}",
                              field="body") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None

    return read


def body_schema(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The ``requestBody`` of a route's ``openapi_extra`` for a body of ``model``."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}
