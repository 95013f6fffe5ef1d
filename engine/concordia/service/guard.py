"""The gate in front of every route: the ``Host``, the credentials and their scopes, and,
for what changes runs, where the request comes from and what it carries.

Each route declares its access (:class:`Access`, in its ``openapi_extra``, which also
puts the security it needs in the OpenAPI document), and this ASGI middleware enforces
it before the route, its body or anything else is read, in this order:

1. ``Host`` is one of the allowed names (loopback names, ``--allowed-host``, the name the
   server was told to bind), else 421 ``host-not-allowed``: a page of another site that
   has pointed its own name at this server's address (DNS rebinding) sends its own name.
   Health routes are exempt: probes address a server by its IP, and they show nothing.
2. Reading and operating routes need a credential (401 ``unauthenticated``, with
   ``WWW-Authenticate: Bearer``) holding the route's scope (403 ``insufficient-scope``),
   unless the server runs with ``--insecure-no-auth``.
3. Operating routes (start, cancel, retry) take a request only from this origin (an
   ``Origin`` or ``Sec-Fetch-Site`` saying otherwise is 403 ``cross-origin``) and only
   with ``Content-Type: application/json`` (415), a body-less retry too: a cross-site
   HTML form can send neither, so no page of another site can make a browser change runs,
   even where no credential is asked for.

Every refusal is a problem document, counted in ``concordia_api_denied_total`` by reason
and logged with the principal it concerned (a token id, a JWT subject), never the
credential. The page's shell (HTML, script, styles, no data) and ``/healthz``/``/readyz``
need no credential; ``POST /events`` has its own signature check.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from concordia.service.problems import Problem, send_problem
from concordia.service.scopes import ANONYMOUS, AuthError
from concordia.service.scopes import Scope as Grant

_log = structlog.get_logger("concordia.service")

ACCESS_KEY = "x-concordia-access"
BEARER = "bearer"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "*"})
REALM = 'Bearer realm="concordia"'


class Access(StrEnum):
    HEALTH = "health"    # no credential, any Host
    PAGE = "page"        # the page's static shell: no credential
    READ = "read"        # needs concordia.read
    OPERATE = "operate"  # needs concordia.operate; same origin, JSON only
    WEBHOOK = "webhook"  # its own signature (POST /events)


_SCOPE = {Access.READ: Grant.READ, Access.OPERATE: Grant.OPERATE}

SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "API token or JWT",
             "description": "An API token (CONCORDIA_API_TOKENS, --api-tokens-file) or a "
                            "JWT verified against --jwks-file. Scopes: concordia.read "
                            "(every GET with data), concordia.operate (start, cancel, "
                            "retry)."},
    "concordiaSignature": {"type": "apiKey", "in": "header", "name": "Concordia-Signature",
                           "description": "t=<unix time>,v1=<hex HMAC-SHA256>"},
    "standardWebhooks": {"type": "apiKey", "in": "header", "name": "webhook-signature",
                         "description": "Standard Webhooks: webhook-id, webhook-timestamp "
                                        "and webhook-signature (v1,<base64>)"},
}


def access(level: Access) -> dict[str, Any]:
    """A route's ``openapi_extra``: its access, and the security the document shows."""
    security: list[dict[str, list[str]]] = []
    if level in _SCOPE:
        security = [{BEARER: [str(_SCOPE[level])]}]
    elif level is Access.WEBHOOK:
        security = [{"concordiaSignature": []}, {"standardWebhooks": []}]
    return {ACCESS_KEY: str(level), "security": security}


# -- hosts ------------------------------------------------------------------------------


def split_host(value: str) -> tuple[str, int | None]:
    """A ``Host`` header's (or a name's) host, lowercased, without brackets or a final
    dot, and its port if it names one."""
    text = value.strip().lower()
    port = ""
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        name, port = text.split(":")
    else:
        name = text  # a name, or a bare IPv6 address
    return name.rstrip("."), int(port) if port.isdigit() and len(port) <= 5 else None


def host_name(value: str) -> str:
    return split_host(value)[0]


def allowed_hosts(bind: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names a server answers: loopback, ``extra``, and ``bind`` unless it
    is a wildcard address (a server bound to every address has no one name)."""
    names = set(LOOPBACK_NAMES) | {host_name(n) for n in extra if host_name(n)}
    if bind is not None and host_name(bind) not in WILDCARD_ADDRESSES:
        names.add(host_name(bind))
    return frozenset(names)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine."""
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# -- the middleware ---------------------------------------------------------------------


class Guard:
    """Enforce each route's :class:`Access` (see the module docstring); ``table`` is
    :func:`access_table`'s."""

    def __init__(self, app: ASGIApp, table: Sequence[tuple[BaseRoute, Access]]) -> None:
        self.app = app
        self.table = list(table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = scope["app"].state.service
        refused = self.check(scope, service)
        if refused is not None:
            problem, reason, principal = refused
            service.metrics.denied.labels(reason).inc()
            _log.warning("request.denied", reason=reason, principal=principal,
                         method=scope["method"], path=scope["path"], detail=problem.detail)
            # The body is never read: close the connection after the answer rather than
            # take in the rest of a body no one will look at.
            await send_problem(send, problem, scope["path"], close=_has_body(scope))
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope, service: Any) -> tuple[Problem, str, str | None] | None:
        """Why ``scope`` is refused (the problem, the metric's reason, the principal),
        or None; a request let through carries its principal in ``scope["state"]``."""
        headers = Headers(scope=scope)
        level = self.access_of(scope)
        if level is Access.HEALTH:
            return None
        gate = service.options
        host = headers.get("host")
        if host is None or host_name(host) not in gate.allowed_hosts:
            shown = json.dumps(host_name(host))[1:-1][:80] if host else "none"
            return (Problem(421, "host-not-allowed",
                            f"this server does not answer for host {shown!r}; if that is its "
                            "name, start it with --allowed-host NAME"),
                    "host_not_allowed", None)
        if level in (Access.PAGE, Access.WEBHOOK):
            return None
        principal = ANONYMOUS
        if not gate.insecure_no_auth:
            try:
                principal = gate.credentials.authenticate(headers.get("authorization"))
            except AuthError as exc:
                challenge = REALM if exc.reason == "missing" else (
                    f'{REALM}, error="invalid_token"')
                return (Problem(401, "unauthenticated", str(exc),
                                headers={"WWW-Authenticate": challenge}),
                        "missing_credentials" if exc.reason == "missing" else exc.reason,
                        exc.principal)
        needed = _SCOPE.get(level) if level is not None else None
        if needed is not None and not principal.may(needed):
            held = ", ".join(sorted(principal.scopes)) or "no scope"
            return (Problem(403, "insufficient-scope",
                            f"{scope['method']} {scope['path']} needs the {needed} scope; "
                            f"the credential of {principal.name} has {held}",
                            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'
                                                         f', scope="{needed}"'},
                            scope=str(needed)),
                    "insufficient_scope", principal.name)
        if level is Access.OPERATE:
            refused = _cross_origin(headers, host) or _not_json(headers)
            if refused is not None:
                return refused[0], refused[1], principal.name
            _log.info("request.operate", principal=principal.name, method=scope["method"],
                      path=scope["path"])
        scope.setdefault("state", {})["principal"] = principal
        return None

    def access_of(self, scope: Scope) -> Access | None:
        """The access of the route ``scope`` goes to; None when no route takes it (no
        route has its path, or none its method): such a request needs a credential, then
        gets its 404 or 405. A method the health and page routes do not take (HEAD, as
        some probes send) is answered as theirs are, without one."""
        partial: Access | None = None
        for route, level in self.table:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return level
            if match is Match.PARTIAL and partial is None:
                partial = level
        return partial if partial in (Access.HEALTH, Access.PAGE) else None


def access_table(routers: Iterable[APIRouter], static: str, document: BaseRoute | None
                 ) -> list[tuple[BaseRoute, Access]]:
    """Every route of ``routers`` with the access it declares, the page's assets under
    ``static`` and the app's route of the OpenAPI document (``concordia.read``); a route
    that declares no access is an error of the app: a new route must say who may call it."""
    table: list[tuple[BaseRoute, Access]] = []
    for router in routers:
        for route in router.routes:
            declared = (route.openapi_extra or {}).get(ACCESS_KEY) if isinstance(
                route, APIRoute) else None
            if declared is None:
                raise RuntimeError(f"route {getattr(route, 'path', route)!r} declares no "
                                   "access (openapi_extra=guard.access(...))")
            table.append((route, Access(declared)))
    table.append((Mount(static, routes=[]), Access.PAGE))  # the page's script and styles
    if document is not None:
        table.append((document, Access.READ))
    return table


def _cross_origin(headers: Headers, host: str) -> tuple[Problem, str] | None:
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        return _origin_problem(f"Sec-Fetch-Site: {site[:40]}"), "cross_origin"
    if origin is not None and not _same_origin(origin, host):
        return _origin_problem(f"Origin: {json.dumps(origin[:80])[1:-1]}"), "cross_origin"
    return None


def _origin_problem(said: str) -> Problem:
    return Problem(403, "cross-origin", f"a request from another origin ({said}) cannot "
                                        "start, cancel or retry runs")


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (scheme://host[:port]) is the origin the ``Host`` names."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (a sandboxed frame, a file), or nonsense
    default = 443 if parts.scheme == "https" else 80
    name, host_port = split_host(host)
    return parts.hostname.rstrip(".") == name and (port or default) == (host_port or default)


def _not_json(headers: Headers) -> tuple[Problem, str] | None:
    media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        return None
    return (Problem(415, "unsupported-media-type",
                    f"send Content-Type: application/json, not {media or 'none'!r} (a "
                    "body-less retry too: what changes runs is never a form post)"),
            "unsupported_media_type")


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip()
                                            not in (b"", b"0")):
            return True
    return False

