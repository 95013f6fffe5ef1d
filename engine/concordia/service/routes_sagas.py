"""``/sagas``: the sagas this server runs, their versions, definitions, YAML and diagrams.

Versions are the ones the engine knows: those loaded from the definitions and those the
store keeps because runs used them (a run finishes on its version after its YAML is gone).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from concordia.definitions.identity import definition_document
from concordia.definitions.models import Saga
from concordia.service.diagrams import diagram_response, draw
from concordia.service.fields import MAX_NAME, Text
from concordia.service.guard import Access, access
from concordia.service.problems import Problem, problem_responses
from concordia.service.state import Service, Svc

router = APIRouter(tags=["sagas"])
SagaName = Annotated[Text, Path(min_length=1, max_length=MAX_NAME)]
_READ = access(Access.READ)
_DENIED = (401, 403, 421)


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
async def list_sagas(svc: Svc) -> dict[str, Any]:
    out = []
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
            responses=problem_responses(404, 422, *_DENIED), openapi_extra=_READ)
async def get_saga(name: SagaName, svc: Svc) -> dict[str, Any]:
    versions = _versions(svc, name)
    return {"name": name, "latest": versions[max(versions)].version,
            "versions": [{"version": v, "description": s.description,
                          "definition": definition_document(s), "yaml": yaml_of(s)}
                         for v, s in sorted(versions.items(), reverse=True)]}


@router.get("/sagas/{name}/graph", summary="A saga's diagram (SVG or Mermaid)",
            responses={200: {"content": {"image/svg+xml": {}, "text/plain": {}}},
                       **problem_responses(404, 422, *_DENIED)}, openapi_extra=_READ)
async def saga_graph(name: SagaName, svc: Svc, request: Request,
                     format: Literal["svg", "mermaid"] | None = None,
                     version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
                     ) -> Response:
    saga = _saga(svc, name, version)
    if format is None:  # negotiated: Mermaid only when asked for text
        accept = request.headers.get("accept", "")
        format = "mermaid" if "text/plain" in accept and "image/svg" not in accept else "svg"
    return diagram_response(draw(saga, format), format)
