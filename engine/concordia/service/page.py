"""The web page: a list of runs, a page per run and a page per saga, served by the app.

One HTML shell for every page under ``/ui/``; a small plain-JavaScript file draws each page
from the JSON API and refreshes what is still moving. Assets ship inside the package
(``concordia/service/static``): nothing is fetched from elsewhere at run time and nothing
needs building.

The shell and its assets hold no data, so they load without a credential (a browser
cannot add a header to a navigation); every run, saga and diagram the page shows comes
from the API, which the script calls with ``Authorization: Bearer <token>``. The page asks
for the token and keeps it in the tab's ``sessionStorage`` (gone when the tab closes),
never in a cookie, so no other site's page can make the browser send it. It also takes the
token from the address's fragment (``/ui/#token=...``, which is never sent to a server)
and then removes it from the address.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from concordia.service.guard import Access, access

STATIC = Path(__file__).with_name("static")
STATIC_PATH = "/ui/static"
router = APIRouter(include_in_schema=False)
# The page's scripts are its own; the diagrams are inline SVG made here, whose style
# attributes need 'unsafe-inline' for styles (never for scripts).
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


_PAGE = access(Access.PAGE)


@router.get("/", openapi_extra=_PAGE)
async def root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui", openapi_extra=_PAGE)
@router.get("/ui/", openapi_extra=_PAGE)
@router.get("/ui/runs/{run_id}", openapi_extra=_PAGE)
@router.get("/ui/sagas/{name}", openapi_extra=_PAGE)
async def shell() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": _CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})
