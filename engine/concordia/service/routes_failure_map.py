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
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from concordia.cli.failure_map import failure_map, point_diagram
from concordia.definitions.catalog import Catalog
from concordia.explore.model import Bounds, Exploration
from concordia.explore.properties import format_seconds
from concordia.explore.report import FailurePoint, failure_points
from concordia.explore.search import Explorer, Workbench
from concordia.service.diagrams import diagram_response
from concordia.service.problems import Problem, problem_responses
from concordia.service.state import Svc

router = APIRouter(tags=["sagas"])
SagaName = Annotated[str, Path(min_length=1, max_length=200)]
Version = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Faults = Annotated[int, Query(ge=0, le=2)]
Items = Annotated[int, Query(ge=1, le=10)]
_KEPT = 32  # explorations kept per app


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
    catalog = svc.engine.core.catalog
    if not catalog.has_saga(name, version):
        known = ", ".join(sorted({n for n, _ in catalog.sagas})) or "none"
        raise Problem(404, "unknown-saga", f"no saga {name!r}"
                      + (f" version {version}" if version else "")
                      + f" in the definitions; known: {known}", saga=name)
    return await asyncio.to_thread(_maps(request).get, catalog, name, version, bounds)


def _point(fp: FailurePoint, number: int) -> dict[str, Any]:
    path = fp.path
    return {"point": number, "step": fp.step, "faults": fp.faults,
            "compensates": fp.compensates, "ends": path.status,
            "left_in_place": [{"effect": lo.name, "kind": str(lo.kind), "reason": lo.reason}
                              for lo in path.leftovers],
            "calls": [c.describe() for c in path.calls],
            "worst_case": format_seconds(path.duration), "path": path.number}


@router.get("/sagas/{name}/failure-map", summary="A saga's failure points, worked out "
            "before it runs", responses=problem_responses(400, 404))
async def get_failure_map(name: SagaName, svc: Svc, request: Request,
                          version: Version = None, faults: Faults = 1,
                          items: Items = 3) -> dict[str, Any]:
    _, ex = await _explored(request, svc, name, version, Bounds(faults=faults, items=items))
    return {"saga": ex.saga, "version": ex.version,
            "bounds": {"faults": faults, "items": items}, "paths": len(ex.paths),
            "states": ex.states, "worst_case": format_seconds(ex.worst_duration),
            "points": [_point(fp, i) for i, fp in enumerate(failure_points(ex), start=1)],
            "violations": [{"property": str(v.property), "message": v.message,
                            "hint": v.hint, "step": v.step, "path": p.number}
                           for v, p in ex.counterexamples]
                          + [{"property": str(v.property), "message": v.message,
                              "hint": v.hint, "step": v.step, "path": None}
                             for v in ex.static],
            "links": {"diagram": f"/sagas/{ex.saga}/failure-map/0?version={ex.version}"}}


@router.get("/sagas/{name}/failure-map/{point}", summary="One failure point drawn on the "
            "saga's diagram (0: the whole map)",
            responses={200: {"content": {"image/svg+xml": {}, "text/plain": {}}},
                       **problem_responses(400, 404)})
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
