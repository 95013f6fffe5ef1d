"""The service under test: the app over a real uvicorn server on 127.0.0.1, on each store.

``served`` starts ``create_app`` (the shop domain of :mod:`tests.service.domain`, its worker
running) on a free loopback port in a thread of this process and yields a
:class:`Served` — its base URL, a signing helper and the engine, whose store the tests
read to check what a request did or did not write. Stores: a SQLite file, and PostgreSQL
(a fresh database per test) once ``open_store`` takes ``postgresql://`` URLs; until then
those variants are skipped, saying why.
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

from concordia.service.app import build_engine, create_app
from concordia.service.metrics import Metrics
from concordia.service.signatures import KeyRing, signature_header
from concordia.service.state import ServiceOptions
from concordia.status import ENDED

ROOT_DIR = Path(__file__).resolve().parents[2]
DOMAIN = Path(__file__).parent / "domain"
DEFINITIONS = str(DOMAIN / "definitions")
HANDLERS = "tests.service.domain.handlers"
SECRET = "test-secret-0123456789abcdef"
OLD_SECRET = "old-secret-abcdef0123456789"
POSTGRES_ADMIN = os.environ.get("CONCORDIA_TEST_POSTGRES",
                                "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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
             secrets: tuple[str, ...] = (SECRET, OLD_SECRET), concurrency: int = 8) -> Any:
    from concordia.registry import load_registry

    metrics = Metrics()
    engine = build_engine(store_url, [DEFINITIONS], load_registry(HANDLERS) if worker else None,
                          metrics, worker=worker)
    options = ServiceOptions(worker=worker, concurrency=concurrency, max_body=max_body,
                             keys=KeyRing(secrets), poll_interval=0.05)
    return create_app(engine, options, metrics=metrics), engine


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    app, engine = make_app(store_url)
    with ThreadedServer(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        served = Served(url, engine, client, store_url)
        try:
            yield served
        finally:
            served.close()
