"""``concordia serve``: the HTTP API, the signed-event webhook and the web page (uvicorn).

The heavy imports (FastAPI, uvicorn, the runtime) happen only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from concordia.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    EnvDefault,
    UsageError,
    command,
    definition_paths,
    definitions_option,
    env_paths,
    load_handlers,
)

if TYPE_CHECKING:
    from concordia.service.credentials import Credentials

_EPILOG = """\
The page is at http://HOST:PORT/ui/, the OpenAPI document at /openapi.json. Every route
but /healthz, /readyz and the page's shell needs Authorization: Bearer <credential> with
the route's scope (concordia.read; concordia.operate to start, cancel and retry): API
tokens from CONCORDIA_API_TOKENS or --api-tokens-file (entries ID:SCOPES:TOKEN), or JWTs
checked against --jwks-file, --jwt-issuer and --jwt-audience. On loopback with none
configured, the server makes a token for its own lifetime and prints it; beyond loopback
it refuses to start without them, unless --insecure-no-auth. Requests must name an
allowed Host: loopback names, the --host name, and each --allowed-host.

POST /events takes CloudEvents signed with HMAC-SHA256 (header
Concordia-Signature: t=<unix time>,v1=<hex>) or Standard Webhooks (webhook-id,
webhook-timestamp, webhook-signature; secrets written whsec_<base64>); the secrets come
from CONCORDIA_WEBHOOK_SECRETS (comma-separated) or --webhook-secrets-file (one a line,
read again when it changes), never from the definitions. Without secrets, POST /events
answers 503 and the rest works. docs/operations.md ("Securing the API") has examples.

Ctrl-C or SIGTERM stops it: the requests in hand are answered, the worker finishes the
steps in hand and gives up its leases, then the process ends by that signal (130 for
Ctrl-C).

exit status:
  2  usage error: definitions with problems, handlers that do not import or leave a
     handler unbound, a store that cannot be opened, unusable secrets, tokens or keys,
     a --host beyond loopback without credentials
"""


def register(sub: Any, env: EnvDefault) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API, the signed-event webhook and the "
                                     "web page",
                       description="Serve the HTTP API (runs, CloudEvents, sagas, health, "
                                   "metrics) and the page that shows runs as diagrams.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=env("store", DEFAULT_STORE), metavar="URL",
                   help=f"the store of runs (env CONCORDIA_STORE; default {DEFAULT_STORE})")
    p.add_argument("--handlers", metavar="MODULE", default=env("handlers", None),
                   help="module whose `registry` holds the handlers (env CONCORDIA_HANDLERS); "
                        "needed unless --no-worker")
    p.add_argument("--host", default=env("host", "127.0.0.1"),
                   help="address to listen on (env CONCORDIA_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("port", "8080") or 8080),
                   help="port to listen on (env CONCORDIA_PORT; default 8080)")
    p.add_argument("--no-worker", dest="worker", action="store_false",
                   help="do not drive runs here: serve the API in front of separate "
                        "`concordia worker` processes")
    p.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="runs the worker drives at once (default 8)")
    p.add_argument("--webhook-secrets-file", metavar="PATH",
                   default=env("webhook_secrets_file", None),
                   help="file of webhook secrets, one a line (env "
                        "CONCORDIA_WEBHOOK_SECRETS_FILE)")
    p.add_argument("--api-tokens-file", metavar="PATH", default=env("api_tokens_file", None),
                   help="file of API tokens, ID:SCOPES:TOKEN one a line (env "
                        "CONCORDIA_API_TOKENS_FILE; CONCORDIA_API_TOKENS takes the same "
                        "entries, space-separated)")
    p.add_argument("--jwks-file", metavar="PATH", default=env("jwks_file", None),
                   help="JSON Web Key Set whose keys sign the bearer JWTs taken (env "
                        "CONCORDIA_JWKS_FILE)")
    p.add_argument("--jwt-issuer", metavar="ISS", default=env("jwt_issuer", None),
                   help="the iss a JWT must name (env CONCORDIA_JWT_ISSUER)")
    p.add_argument("--jwt-audience", metavar="AUD", default=env("jwt_audience", None),
                   help="the aud a JWT must name (env CONCORDIA_JWT_AUDIENCE)")
    p.add_argument("--allowed-host", metavar="NAME", action="append",
                   default=[h for h in (env("allowed_hosts", "") or "").split(",") if h],
                   help="a Host name this server answers besides loopback and --host; "
                        "repeatable (env CONCORDIA_ALLOWED_HOSTS, comma-separated)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="take requests without credentials, even beyond loopback (a "
                        "warning says so); for a network where only trusted clients can "
                        "reach the server")
    p.add_argument("--signature-tolerance", type=float, default=300.0, metavar="SECONDS",
                   help="how far a signature's timestamp may be from this clock (default 300)")
    p.add_argument("--max-body", type=int, default=1024 * 1024, metavar="BYTES",
                   help="the largest request body taken (default 1048576)")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning)")
    definitions_option(env_paths())(p)
    p.set_defaults(func=cmd_serve)


@command
def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"`concordia serve` needs its extra ({exc.name} is missing): "
                         "pip install 'concordia-sagas[serve]'") from None

    from concordia.cli.engines import check_store_parent
    from concordia.logging import ensure_configured
    from concordia.service.app import build_engine, create_app
    from concordia.service.guard import allowed_hosts
    from concordia.service.metrics import Metrics
    from concordia.service.signatures import KeyRing
    from concordia.service.state import ServiceOptions
    from concordia.service.watched import ConfigFileError

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.max_body < 1024:
        raise UsageError("--max-body must be at least 1024 bytes")
    if not 0 < args.signature_tolerance <= 3600:
        raise UsageError("--signature-tolerance must be between 0 and 3600 seconds")
    if args.worker and not args.handlers:
        raise UsageError("name the handlers to run (--handlers MODULE), or serve with "
                         "--no-worker in front of separate `concordia worker` processes")
    try:
        keys = KeyRing.from_environment(args.webhook_secrets_file)
        credentials, token = _credentials(args)
    except ConfigFileError as exc:
        raise UsageError(str(exc)) from None
    ensure_configured()
    check_store_parent(args.store)
    registry = load_handlers(args.handlers) if args.handlers else None
    metrics = Metrics()
    engine = build_engine(args.store, definition_paths(args.definitions), registry, metrics,
                          worker=args.worker)
    options = ServiceOptions(worker=args.worker, concurrency=args.concurrency,
                             max_body=args.max_body, tolerance=args.signature_tolerance,
                             keys=keys, credentials=credentials,
                             insecure_no_auth=args.insecure_no_auth,
                             allowed_hosts=allowed_hosts(args.host, args.allowed_host))
    app = create_app(engine, options, metrics=metrics)
    if not keys:
        print("concordia serve: no webhook secrets (CONCORDIA_WEBHOOK_SECRETS or "
              "--webhook-secrets-file): POST /events answers 503", flush=True)
    if args.insecure_no_auth:
        print(f"concordia serve: WARNING: --insecure-no-auth: anyone who can reach "
              f"{args.host}:{args.port} can read, start, cancel and retry runs", flush=True)
    elif token is not None:
        # The one place this token is ever shown: it lives as long as this process.
        print("concordia serve: no API credentials configured; this process's token "
              f"(concordia.read, concordia.operate): {token} (open the page as "
              f"http://{args.host}:{args.port}/ui/#token={token})", flush=True)
    print(f"concordia serve on http://{args.host}:{args.port}/ui/ (store {args.store}"
          f"{'' if args.worker else ', no worker'}); Ctrl-C to stop", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, server_header=False, proxy_headers=False)
    return EXIT_OK


def _credentials(args: argparse.Namespace) -> tuple[Credentials, str | None]:
    """The credentials to serve with, and the token made for this process when there are
    none on loopback; a UsageError when the host needs credentials it was not given."""
    from concordia.service.api_tokens import ApiTokens
    from concordia.service.credentials import Credentials
    from concordia.service.guard import is_loopback
    from concordia.service.jwt_bearer import JwtVerifier

    jwt = None
    if args.jwks_file:
        jwt = JwtVerifier(args.jwks_file, args.jwt_issuer or "", args.jwt_audience or "")
    elif args.jwt_issuer or args.jwt_audience:
        raise UsageError("--jwt-issuer and --jwt-audience go with --jwks-file (the keys "
                         "that sign the tokens)")
    credentials = Credentials(ApiTokens.from_environment(args.api_tokens_file), jwt)
    if args.insecure_no_auth:
        if credentials.configured():
            raise UsageError("--insecure-no-auth with credentials configured: drop one "
                             "(the credentials would never be asked for)")
        return credentials, None
    if credentials.configured():
        return credentials, None
    if not is_loopback(args.host):
        raise UsageError(f"--host {args.host} is beyond loopback and no API credentials are "
                         "configured: set CONCORDIA_API_TOKENS (ID:SCOPES:TOKEN), "
                         "--api-tokens-file or --jwks-file (see docs/operations.md, "
                         "\"Securing the API\"), or pass --insecure-no-auth")
    tokens, token = ApiTokens.ephemeral()
    return Credentials(tokens), token
