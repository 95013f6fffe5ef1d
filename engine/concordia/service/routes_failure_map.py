"""``/sagas/{name}/failure-map``: every failure point of a saga, worked out before it runs
(:mod:`concordia.explore`), for the saga's page.

- ``GET /sagas/{name}/failure-map``: the failure points (what fails, what is compensated,
  how the run ends, what is left in place, the worst case) and the breaches ``prove``
  would report;
- ``GET /sagas/{name}/failure-map/{point}``: a point's run drawn on the saga's diagram
  (the path it took bold, where it ended outlined), or with ``point`` 0 the whole map.

Read routes: they explore the definitions, never the runs or the store. An exploration
runs off the event loop and is kept (by saga, version and bounds) for the next request.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field
from starlette.responses import Response
from typing_extensions import TypedDict

from concordia.definitions.catalog import Catalog
from concordia.explore.failure_map import failure_map, point_diagram
from concordia.explore.model import Bounds, Exploration, Violation
from concordia.explore.properties import format_seconds
from concordia.explore.report import FailurePoint, failure_points
from concordia.explore.search import Explorer, Workbench
from concordia.service.diagrams import DIAGRAM_RESPONSE, diagram_response
from concordia.service.guard import Access, access
from concordia.service.problems import Problem, problem_responses
from concordia.service.state import Svc

router = APIRouter(tags=["sagas"])
SagaName = Annotated[str, Path(min_length=1, max_length=200)]
Version = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Faults = Annotated[int, Query(ge=0, le=2)]
Items = Annotated[int, Query(ge=1, le=10)]
_KEPT = 32  # explorations kept per app
_DENIED = (401, 403, 421)

LeftoverKindName = Literal["declared", "halted", "unrecorded", "uncompensated"]
PropertyName = Literal["no-silent-leftovers", "compensation-order", "termination",
                       "await-deadlines", "events-and-reads"]


class LeftInPlace(TypedDict):
    """An effect still in place where a failure point's run ends, and why."""

    effect: Annotated[str, Field(description="The step (or fan-out item) whose effect it is")]
    kind: Annotated[LeftoverKindName, Field(description=(
        "declared: `compensate: none` with a reason; halted: the run ended "
        "compensation_failed and can be retried; unrecorded or uncompensated: a breach"))]
    reason: Annotated[str | None, Field(description="The declared reason, if any")]


class Point(TypedDict):
    """One failure point: a path with a fault, where it fails and what follows."""

    point: Annotated[int, Field(description="Its number: /sagas/{name}/failure-map/{point}")]
    step: Annotated[str | None, Field(description="The step of its first fault")]
    faults: Annotated[str, Field(description="Its faults in words")]
    compensates: Annotated[list[str], Field(description="What is undone, in order")]
    ends: Annotated[str, Field(description="The run's status at the end of the path")]
    left_in_place: list[LeftInPlace]
    calls: Annotated[list[str], Field(description="The handler calls, in order")]
    worst_case: Annotated[str, Field(description="Its longest duration (timers, retries)")]
    path: Annotated[int, Field(description="The explored path it is (as `simulate` numbers)")]


class Breach(TypedDict):
    """A property ``concordia prove`` would report broken."""

    property: PropertyName
    message: str
    hint: str
    step: str | None
    path: Annotated[int | None, Field(description="The path that breaks it (None: found "
                                                   "in the definition itself)")]


class MapBounds(TypedDict):
    faults: int
    items: int


class MapLinks(TypedDict):
    diagram: Annotated[str, Field(description="The whole map drawn")]


class FailureMap(TypedDict):
    """Every failure point of a saga version within the bounds, and the breaches."""

    saga: str
    version: int
    bounds: MapBounds
    paths: Annotated[int, Field(description="The complete paths explored")]
    states: Annotated[int, Field(description="The distinct states explored")]
    worst_case: str
    points: list[Point]
    violations: list[Breach]
    links: MapLinks


class _Maps:
    """The explorations an app has made, newest last (one lock: requests run in threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: OrderedDict[tuple[str, int, Bounds], tuple[Explorer, Exploration]] = (
            OrderedDict())

    def get(self, catalog: Catalog, name: str, version: int | None, bounds: Bounds
            ) -> tuple[Explorer, Exploration]:
        saga = catalog.saga(name, version)
        key = (saga.name, saga.version, bounds)
        with self.lock:
            found = self.kept.get(key)
            if found is None:
                explorer = Workbench(catalog).explorer(saga, bounds)
                found = self.kept[key] = (explorer, explorer.explore())
                while len(self.kept) > _KEPT:
                    self.kept.popitem(last=False)
            return found


def _maps(request: Request) -> _Maps:
    maps = getattr(request.app.state, "failure_maps", None)
    if maps is None:
        maps = request.app.state.failure_maps = _Maps()
    return maps


async def _explored(request: Request, svc: Svc, name: str, version: int | None,
                    bounds: Bounds) -> tuple[Explorer, Exploration]:
    catalog = svc.engine.catalog
    if not catalog.has_saga(name, version):
        known = ", ".join(sorted({n for n, _ in catalog.sagas})) or "none"
        raise Problem(404, "unknown-saga", f"no saga {name!r}"
                      + (f" version {version}" if version else "")
                      + f" in the definitions; known: {known}", saga=name)
    return await asyncio.to_thread(_maps(request).get, catalog, name, version, bounds)


def _point(fp: FailurePoint, number: int) -> Point:
    path = fp.path
    return {"point": number, "step": fp.step, "faults": fp.faults,
            "compensates": fp.compensates, "ends": path.status,
            "left_in_place": [{"effect": lo.name, "kind": lo.kind.value, "reason": lo.reason}
                              for lo in path.leftovers],
            "calls": [c.describe() for c in path.calls],
            "worst_case": format_seconds(path.duration), "path": path.number}


def _breach(v: Violation, path: int | None) -> Breach:
    return {"property": v.property.value, "message": v.message, "hint": v.hint,
            "step": v.step, "path": path}


@router.get("/sagas/{name}/failure-map", summary="A saga's failure points, worked out "
            "before it runs", responses=problem_responses(400, 404, *_DENIED),
            openapi_extra=access(Access.READ))
async def get_failure_map(name: SagaName, svc: Svc, request: Request,
                          version: Version = None, faults: Faults = 1,
                          items: Items = 3) -> FailureMap:
    _, ex = await _explored(request, svc, name, version, Bounds(faults=faults, items=items))
    return {"saga": ex.saga, "version": ex.version,
            "bounds": {"faults": faults, "items": items}, "paths": len(ex.paths),
            "states": ex.states, "worst_case": format_seconds(ex.worst_duration),
            "points": [_point(fp, i) for i, fp in enumerate(failure_points(ex), start=1)],
            "violations": [_breach(v, p.number) for v, p in ex.counterexamples]
                          + [_breach(v, None) for v in ex.static],
            "links": {"diagram": f"/sagas/{ex.saga}/failure-map/0?version={ex.version}"}}


@router.get("/sagas/{name}/failure-map/{point}", summary="One failure point drawn on the "
            "saga's diagram (0: the whole map)",
            response_class=Response,
            responses={200: DIAGRAM_RESPONSE, **problem_responses(400, 404, *_DENIED)},
            openapi_extra=access(Access.READ))
async def get_failure_point(name: SagaName, svc: Svc, request: Request,
                            point: Annotated[int, Path(ge=0, le=100_000)],
                            version: Version = None, faults: Faults = 1, items: Items = 3,
                            format: Literal["svg", "mermaid"] = "svg") -> Response:
    explorer, ex = await _explored(request, svc, name, version,
                                   Bounds(faults=faults, items=items))
    if point == 0:
        return diagram_response(failure_map(explorer.saga, ex, format), format)
    points = failure_points(ex)
    if point > len(points):
        raise Problem(404, "unknown-failure-point", f"saga {name!r} has {len(points)} "
                      f"failure points within these bounds; ask for 1 to {len(points)}",
                      saga=name)
    lock = _maps(request).lock

    def draw() -> str:
        with lock:  # the explorer's workbench replays the path on its own journal
            return point_diagram(explorer, points[point - 1], format)

    return diagram_response(await asyncio.to_thread(draw), format)
