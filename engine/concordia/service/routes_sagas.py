"""``/sagas``: the sagas this server runs, their versions, definitions, YAML and diagrams.

Versions are the ones the engine knows: those loaded from the definitions and those the
store keeps because runs used them (a run finishes on its version after its YAML is gone).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, WithJsonSchema
from starlette.responses import Response
from typing_extensions import TypedDict

from concordia.definitions.identity import definition_document
from concordia.definitions.models import Saga
from concordia.service.diagrams import DIAGRAM_RESPONSE, diagram_response, draw
from concordia.service.fields import MAX_NAME, Text
from concordia.service.guard import Access, access
from concordia.service.problems import Problem, problem_responses
from concordia.service.state import Service, Svc

router = APIRouter(tags=["sagas"])
SagaName = Annotated[Text, Path(min_length=1, max_length=MAX_NAME)]
_READ = access(Access.READ)
_DENIED = (401, 403, 421)


class SagaLinks(TypedDict):
    """Where to read the saga, draw it, and see it as a page."""

    self: str
    graph: str
    page: str


class SagaSummary(TypedDict):
    """A saga as its latest version says it."""

    name: str
    latest: Annotated[int, Field(description="Its latest version")]
    versions: Annotated[list[int], Field(
        description="The versions this server has, oldest first (a run finishes on the "
                    "version it started with)")]
    description: str
    trigger: Annotated[str | None, Field(
        description="The event type that starts a run of it, if one does")]
    steps: Annotated[list[str], Field(description="Its steps' names, in definition order")]
    links: SagaLinks


class SagaList(TypedDict):
    """The sagas this server runs, by name."""

    sagas: list[SagaSummary]


# A saga version as the engine holds it: the document whose SHA-256 is its fingerprint.
Definition = Annotated[dict[str, Any], WithJsonSchema({
    "type": "object", "required": ["name", "version", "steps"],
    "properties": {"name": {"type": "string"}, "version": {"type": "integer"},
                   "steps": {"type": "array", "items": {"type": "object"}}},
    "additionalProperties": True,
    "description": "The version as the engine compiled it: its canonical JSON document, "
                   "every field with its value"})]


class SagaVersion(TypedDict):
    """One version of a saga: its definition, and its YAML."""

    version: int
    description: str
    definition: Definition
    yaml: Annotated[str, Field(
        description="The YAML as written (for a version known only from the store, the "
                    "stored definition as YAML)")]


class SagaDetail(TypedDict):
    """A saga with every version this server has, newest first."""

    name: str
    latest: int
    versions: list[SagaVersion]


def versions_of(svc: Service) -> dict[str, dict[int, Saga]]:
    return svc.engine.versions()


def _versions(svc: Service, name: str) -> dict[int, Saga]:
    """The versions of saga ``name`` this server has; a 404 naming the known sagas."""
    every = versions_of(svc)
    versions = every.get(name)
    if not versions:
        known = ", ".join(sorted(every)) or "none"
        raise Problem(404, "unknown-saga", f"no saga {name!r}; known: {known}", saga=name)
    return versions


def _saga(svc: Service, name: str, version: int | None) -> Saga:
    versions = _versions(svc, name)
    if version is None:
        return versions[max(versions)]
    if version not in versions:
        raise Problem(404, "unknown-saga", f"saga {name!r} has no version {version} (known: "
                                           f"{', '.join(map(str, sorted(versions)))})",
                      saga=name)
    return versions[version]


def yaml_of(saga: Saga) -> str:
    """The saga's YAML as written, or (a version known only from the store) as stored."""
    if saga.source and os.path.isfile(saga.source):
        try:
            with open(saga.source, encoding="utf-8") as f:
                text = f.read()
            if f"name: {saga.name}" in text:
                return text
        except (OSError, UnicodeDecodeError):
            pass
    return yaml.safe_dump(definition_document(saga), sort_keys=False)


@router.get("/sagas", summary="The sagas this server runs",
            responses=problem_responses(*_DENIED), openapi_extra=_READ)
async def list_sagas(svc: Svc) -> SagaList:
    out: list[SagaSummary] = []
    for name, versions in sorted(versions_of(svc).items()):
        latest = versions[max(versions)]
        out.append({"name": name, "latest": latest.version, "versions": sorted(versions),
                    "description": latest.description,
                    "trigger": latest.trigger.event if latest.trigger else None,
                    "steps": [s.name for s in latest.steps],
                    "links": {"self": f"/sagas/{name}", "graph": f"/sagas/{name}/graph",
                              "page": f"/ui/sagas/{name}"}})
    return {"sagas": out}


@router.get("/sagas/{name}", summary="A saga: its versions, definitions and YAML",
            responses=problem_responses(400, 404, 422, *_DENIED), openapi_extra=_READ)
async def get_saga(name: SagaName, svc: Svc) -> SagaDetail:
    versions = _versions(svc, name)
    return {"name": name, "latest": versions[max(versions)].version,
            "versions": [{"version": v, "description": s.description,
                          "definition": definition_document(s), "yaml": yaml_of(s)}
                         for v, s in sorted(versions.items(), reverse=True)]}


@router.get("/sagas/{name}/graph", summary="A saga's diagram (SVG or Mermaid)",
            response_class=Response,
            responses={200: DIAGRAM_RESPONSE, **problem_responses(400, 404, 422, *_DENIED)},
            openapi_extra=_READ)
async def saga_graph(name: SagaName, svc: Svc, request: Request,
                     format: Literal["svg", "mermaid"] | None = None,
                     version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
                     ) -> Response:
    saga = _saga(svc, name, version)
    if format is None:  # negotiated: Mermaid only when asked for text
        accept = request.headers.get("accept", "")
        format = "mermaid" if "text/plain" in accept and "image/svg" not in accept else "svg"
    return diagram_response(draw(saga, format), format)
