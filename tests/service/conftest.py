"""The service under test: the app over a real uvicorn server on 127.0.0.1, on each store.

``served`` starts ``create_app`` (the shop domain of :mod:`tests.service.domain`, its worker
running) on a free loopback port in a thread of this process and yields a
:class:`Served` — its base URL, a client holding a token with both scopes, a signing
helper and the engine, whose store the tests read to check what a request did or did not
write. Stores: a SQLite file, and PostgreSQL (a fresh database per test).

The app takes three API tokens (:data:`READER`, :data:`OPERATOR`, :data:`ADMIN`: read,
operate, both) and JWTs signed by :data:`JWT_KEY` for :data:`ISSUER` and
:data:`AUDIENCE` (its public half in a JWKS file); :func:`jwt_for` makes them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from concordia.service.api_tokens import ApiTokens
from concordia.service.app import build_engine, create_app
from concordia.service.credentials import Credentials
from concordia.service.jwt_bearer import JwtVerifier
from concordia.service.metrics import Metrics
from concordia.service.signatures import KeyRing, signature_header
from concordia.service.state import ServiceOptions
from concordia.status import ENDED

ROOT_DIR = Path(__file__).resolve().parents[2]
DOMAIN = Path(__file__).parent / "domain"
DEFINITIONS = str(DOMAIN / "definitions")
# a saga with a fan-out and a child saga (the page's tests), beside the shop's
FANOUT = str(DOMAIN / "fanout")
# a saga whose one step asks a policy (its decisions), beside the shop's
POLICY = str(DOMAIN / "policy")
HANDLERS = "tests.service.domain.handlers"
SECRET = "test-secret-0123456789abcdef"
OLD_SECRET = "old-secret-abcdef0123456789"
POSTGRES_ADMIN = os.environ.get("CONCORDIA_TEST_POSTGRES",
                                "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

READER = "reader-0123456789abcdef0123456789abcdef"
OPERATOR = "operator-0123456789abcdef0123456789abcdef"
ADMIN = "admin-0123456789abcdef0123456789abcdef"
TOKEN_ENTRIES = (f"reader:concordia.read:{READER}", f"operator:concordia.operate:{OPERATOR}",
                 f"admin:concordia.read,concordia.operate:{ADMIN}")
ISSUER = "https://login.example.test/"
AUDIENCE = "concordia-api"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


AUTH = bearer(ADMIN)


def _jwt_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


JWT_KEY = _jwt_key()


def jwks_file(directory: Path) -> Path:
    """A JWKS file with :data:`JWT_KEY`'s public half (``kid`` ``k1``)."""
    from jwt.algorithms import ECAlgorithm

    jwk = json.loads(ECAlgorithm.to_jwk(JWT_KEY.public_key()))
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig",
                                          "alg": "ES256"}]}))
    return path


def jwt_for(scope: str = "concordia.read concordia.operate", *, audience: str = AUDIENCE,
            issuer: str = ISSUER, expires_in: float = 300, subject: str = "user-7",
            key: Any = None, kid: str = "k1") -> str:
    import jwt

    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "sub": subject, "iat": now,
              "exp": now + expires_in, "scope": scope}
    return jwt.encode(claims, key or JWT_KEY, algorithm="ES256", headers={"kid": kid})


def credentials(directory: Path | None = None) -> Credentials:
    """The three API tokens and, with a directory for its JWKS file, the JWT verifier."""
    verifier = None
    if directory is not None:
        verifier = JwtVerifier(str(jwks_file(directory)), ISSUER, AUDIENCE)
    return Credentials(ApiTokens(TOKEN_ENTRIES), verifier)


def client(url: str, timeout: float = 30) -> httpx.Client:
    """A client of ``url`` holding the token with both scopes."""
    return httpx.Client(base_url=url, timeout=timeout, headers=AUTH)


def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    from concordia.store import open_store

    admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    name = f"concordia_service_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        open_store(url).close()  # creates the store's schema in the fresh database
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        yield from postgres_database()


class ThreadedServer:
    """uvicorn serving ``app`` on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", ws="none",
            lifespan="on", access_log=False, **config))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Served:
    url: str
    engine: Any
    client: httpx.Client
    store_url: str
    reader: Any = None

    @property
    def store(self) -> Any:
        """The store as another process would read it: opened on its own (read-only where
        the backend allows), never the server's connections."""
        if self.store_url.startswith("memory:"):
            return self.engine.store  # nowhere else to read it from
        if self.reader is None:
            from concordia.store import open_store

            readonly = self.store_url.startswith("sqlite:")
            self.reader = open_store(self.store_url, readonly=readonly)
        return self.reader

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def signed(self, body: bytes, *, secrets: tuple[str, ...] = (SECRET,),
               at: int | None = None, ce: dict[str, str] | None = None) -> dict[str, str]:
        """Headers that sign ``body`` (and, in binary mode, the ``ce`` headers)."""
        stamp = int(time.time()) if at is None else at
        return {"Concordia-Signature": signature_header(secrets, stamp, body, ce)}

    def post_event(self, event: dict[str, Any], **sign: Any) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/cloudevents+json", **self.signed(body, **sign)}
        return self.client.post("/events", content=body, headers=headers)

    def start(self, saga: str, input: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = self.client.post("/runs", json={"saga": saga, "input": input, **extra})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def settle(self, run_id: str, until: Callable[[dict[str, Any]], bool] | None = None,
               timeout: float = 15.0) -> dict[str, Any]:
        """Poll the run until ``until`` holds (default: it ended or suspended)."""
        until = until or (lambda r: r["status"] in ENDED or r["status"] == "suspended")
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.get(f"/runs/{run_id}").json()
            if until(run) or time.monotonic() > deadline:
                return dict(run)
            time.sleep(0.02)

    def journal(self) -> Any:
        """Everything a request could have written, as the store shows it."""
        store = self.store
        runs = store.page_runs(None, None, None, None, 1_000_000)
        return ([(r.id, r.rev, str(r.status), len(store.history(r.id)),
                  len(store.run_events(r.id))) for r in runs],
                store.outbox_backlog(), store.run_counts())


def event(type_: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    from concordia.timestamps import format_timestamp, utc_now

    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "urn:test:provider",
            "type": type_, "time": format_timestamp(utc_now()),
            "datacontenttype": "application/json", "data": data, **extra}


def make_app(store_url: str, *, worker: bool = True, max_body: int = 64 * 1024,
             secrets: tuple[str, ...] = (SECRET, OLD_SECRET), concurrency: int = 8,
             creds: Credentials | None = None, fanout: bool = False,
             extra: tuple[str, ...] = (), **options: Any) -> Any:
    """The app over the shop domain (and the fan-out saga, if ``fanout``, and the
    definition trees in ``extra``), taking :func:`credentials` unless ``creds`` says
    otherwise; ``options`` are further :class:`ServiceOptions`."""
    from concordia.registry import load_registry

    metrics = Metrics()
    definitions = [DEFINITIONS, *([FANOUT] if fanout else []), *extra]
    engine = build_engine(store_url, definitions, load_registry(HANDLERS) if worker else None,
                          metrics, worker=worker)
    settings = ServiceOptions(worker=worker, concurrency=concurrency, max_body=max_body,
                              keys=KeyRing(secrets), poll_interval=0.05,
                              credentials=credentials() if creds is None else creds, **options)
    return create_app(engine, settings, metrics=metrics), engine


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    app, engine = make_app(store_url)
    with ThreadedServer(app) as url, client(url) as http:
        served = Served(url, engine, http, store_url)
        try:
            yield served
        finally:
            served.close()
