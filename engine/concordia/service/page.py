"""The web page: a list of runs, a page per run and a page per saga, served by the app.

One HTML shell for every page under ``/ui/``; a small plain-JavaScript file draws each page
from the JSON API and refreshes what is still moving. Assets ship inside the package
(``concordia/service/static``): nothing is fetched from elsewhere at run time and nothing
needs building.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
router = APIRouter(include_in_schema=False)
# The page's scripts are its own; the diagrams are inline SVG made here, whose style
# attributes need 'unsafe-inline' for styles (never for scripts).
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
@router.get("/ui/")
@router.get("/ui/runs/{run_id}")
@router.get("/ui/sagas/{name}")
async def shell() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": _CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})
