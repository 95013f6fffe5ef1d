"""Text the journal cannot keep — NUL, lone surrogates, strings over their limit — in every
field a request carries, on the memory, SQLite and PostgreSQL stores: the same answer
from each, never a 5xx, a 422 naming the field where the text is refused, and nothing
written.

Also: a 503 does not name the store, and the client errors that used to reach the store
as one (PostgreSQL refusing NUL) no longer do.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from concordia.errors import StoreError
from tests.service.conftest import (
    AUTH,
    Served,
    ThreadedServer,
    client,
    event,
    make_app,
    postgres_database,
)

pytestmark = pytest.mark.postgres
NUL = "a\x00b"
LONE = "a\ud800b"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The app on each store, with a run awaiting its payment in each."""
    directory = tmp_path_factory.mktemp("text")
    databases = postgres_database()
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{directory / 'runs.db'}",
            "postgres": next(databases)}
    stack: list[Any] = []
    out: dict[str, Served] = {}
    try:
        for name, url in urls.items():
            app, engine = make_app(url)
            server = ThreadedServer(app)
            base = server.__enter__()
            stack.append(server)
            http = client(base)
            stack.append(http)
            out[name] = Served(base, engine, http, url)
            run = out[name].start("payment", {"order_id": "text-1"})
            out[name].settle(run["id"])
        yield out
    finally:
        for served in out.values():
            served.close()
        for item in reversed(stack):
            item.__exit__(None, None, None)
        for _ in databases:  # drops the database
            pass


def _body(value: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as its \\ud800 escape, as a client would
    return json.dumps(value, ensure_ascii=True).encode()


def _signed_event(served: Served, changes: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = event("shop.payment.settled", {"order_id": "text-1", "amount": 1})
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    body = _body(raw)
    return body, {"Content-Type": "application/cloudevents+json", **served.signed(body)}


def _start(**fields: Any) -> dict[str, Any]:
    return {"saga": "order", "input": {"order_id": "t"}, **fields}


# (case, method, path, JSON body or None, event attribute changes or None,
#  expected status, expected field)
CASES: list[tuple[str, str, str, Any, Any, int, str | None]] = [
    ("saga NUL", "POST", "/runs", _start(saga=NUL), None, 422, "body/saga"),
    ("saga lone surrogate", "POST", "/runs", _start(saga=LONE), None, 422, "body/saga"),
    ("saga over-long", "POST", "/runs", _start(saga="s" * 201), None, 422, "body/saga"),
    ("correlation_id NUL", "POST", "/runs", _start(correlation_id=NUL), None, 422,
     "body/correlation_id"),
    ("correlation_id lone surrogate", "POST", "/runs", _start(correlation_id=LONE), None,
     422, "body/correlation_id"),
    ("correlation_id over-long", "POST", "/runs", _start(correlation_id="c" * 201), None,
     422, "body/correlation_id"),
    ("input value NUL", "POST", "/runs", _start(input={"order_id": NUL}), None, 422,
     "body/input/order_id"),
    ("input value lone surrogate", "POST", "/runs", _start(input={"order_id": LONE}), None,
     422, "body/input/order_id"),
    ("input key NUL", "POST", "/runs", _start(input={"order_id": "t", NUL: 1}), None, 422,
     f"body/input/{NUL}"),
    ("cancel reason NUL", "POST", "/runs/RUN/cancel", {"reason": NUL}, None, 422,
     "body/reason"),
    ("cancel reason lone surrogate", "POST", "/runs/RUN/cancel", {"reason": LONE}, None, 422,
     "body/reason"),
    ("cancel reason over-long", "POST", "/runs/RUN/cancel", {"reason": "r" * 2001}, None,
     422, "body/reason"),
    ("run id NUL", "GET", f"/runs/{quote(NUL)}", None, None, 422, "path/run_id"),
    ("run id NUL, graph", "GET", f"/runs/{quote(NUL)}/graph", None, None, 422,
     "path/run_id"),
    ("run id NUL, cancel", "POST", f"/runs/{quote(NUL)}/cancel", {"reason": "r"}, None, 422,
     "path/run_id"),
    ("run id NUL, retry", "POST", f"/runs/{quote(NUL)}/retry", {}, None, 422,
     "path/run_id"),
    ("run id over-long", "GET", "/runs/" + "r" * 201, None, None, 400, "path/run_id"),
    ("run id of invalid UTF-8", "GET", "/runs/%ED%A0%80", None, None, 404, None),
    ("saga name NUL", "GET", f"/sagas/{quote(NUL)}", None, None, 422, "path/name"),
    ("saga filter NUL", "GET", f"/runs?saga={quote(NUL)}", None, None, 422, "query/saga"),
    ("correlation filter NUL", "GET", f"/runs?correlation_id={quote(NUL)}", None, None, 422,
     "query/correlation_id"),
    ("correlation filter over-long", "GET", "/runs?correlation_id=" + "c" * 201, None, None,
     400, "query/correlation_id"),
    ("before NUL", "GET", f"/runs?before={quote(NUL)}", None, None, 422, "query/before"),
    ("before unknown", "GET", "/runs?before=no-such-run", None, None, 400, "query/before"),
    ("event source NUL", "POST", "/events", None, {"source": NUL}, 400, "source"),
    ("event source lone surrogate", "POST", "/events", None, {"source": LONE}, 400,
     "source"),
    ("event source over-long", "POST", "/events", None, {"source": "urn:" + "s" * 253}, 400,
     "source"),
    ("event id NUL", "POST", "/events", None, {"id": NUL}, 400, "id"),
    ("event id over-long", "POST", "/events", None, {"id": str(uuid.uuid4()) + "x" * 300},
     400, "id"),
    ("event type NUL", "POST", "/events", None, {"type": NUL}, 400, "type"),
    ("event subject NUL", "POST", "/events", None, {"subject": NUL}, 400, "subject"),
    ("event subject over-long", "POST", "/events", None, {"subject": "s" * 1025}, 400,
     "subject"),
    ("event correlationid NUL", "POST", "/events", None, {"correlationid": NUL}, 400,
     "correlationid"),
    ("event correlationid lone surrogate", "POST", "/events", None,
     {"correlationid": LONE}, 400, "correlationid"),
    ("event causationid NUL", "POST", "/events", None, {"causationid": NUL}, 400,
     "causationid"),
    ("event extension NUL", "POST", "/events", None, {"traceparent": NUL}, 400,
     "traceparent"),
    ("event data NUL", "POST", "/events", None,
     {"data": {"order_id": NUL, "amount": 1}}, 422, "data/order_id"),
    ("event data lone surrogate", "POST", "/events", None,
     {"data": {"order_id": LONE, "amount": 1}}, 422, "data/order_id"),
]


def _send(served: Served, run_id: str, method: str, path: str, body: Any,
          attributes: Any) -> httpx.Response:
    if attributes is not None:
        content, headers = _signed_event(served, attributes)
        return served.client.post("/events", content=content, headers=headers)
    content = _body(body) if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return served.client.request(method, path.replace("RUN", run_id), content=content,
                                 headers=headers)


@pytest.mark.parametrize(("case", "method", "path", "body", "attributes", "status", "field"),
                         CASES, ids=[c[0] for c in CASES])
def test_every_store_gives_the_same_answer_to_text_it_cannot_keep(
        servers: dict[str, Served], case: str, method: str, path: str, body: Any,
        attributes: Any, status: int, field: str | None) -> None:
    answers = {}
    for name, served in servers.items():
        run_id = served.client.get("/runs", params={"status": "suspended"}).json()[
            "runs"][0]["id"]
        before = served.journal()
        answer = _send(served, run_id, method, path, body, attributes)
        answers[name] = (answer.status_code, answer.json().get("field"))
        assert answer.status_code < 500, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", (name,
                                                                             answer.text)
        assert served.journal() == before, name
    assert answers == dict.fromkeys(servers, (status, field)), answers


def test_an_idempotency_key_that_is_not_visible_ascii_is_refused_on_every_store(
        servers: dict[str, Served]) -> None:
    for served in servers.values():
        where = urlsplit(served.url)
        before = served.journal()
        body = _body(_start())
        for key in (b"k\x00y", b"k\xed\xa0\x80y", b"k" * 256):
            request = (b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                       b"Authorization: " + AUTH["Authorization"].encode() +
                       b"\r\nContent-Type: application/json\r\nIdempotency-Key: " + key +
                       b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
                conn.sendall(request)
                answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 400"), (served.store_url, key, answer[:300])
        assert served.journal() == before


def test_a_503_says_the_store_is_unavailable_and_only_the_log_says_which(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", worker=False)
    failure = StoreError("PostgreSQL store db.internal:5432/concordia?schema=prod: "
                         "connection refused")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise failure

    with ThreadedServer(app) as base, client(base) as http, capture_logs() as logs:
        monkeypatch.setattr(engine.astore, "read", broken)
        for path in ("/runs", "/readyz", "/metrics"):
            answer = http.get(path)
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            for secret in ("db.internal", "5432", "prod", "PostgreSQL", "refused"):
                assert secret not in answer.text, (path, answer.text)
        assert "sqlite" not in http.get("/readyz").text.replace('"store"', "")
    logged = [e for e in logs if e["event"] in ("store.failed", "readiness.store_failed")]
    assert len(logged) >= 3
    assert all("db.internal:5432" in e["error"] for e in logged)


def test_a_ready_server_names_its_kind_of_store_only(servers: dict[str, Served]) -> None:
    for name, served in servers.items():
        ready = httpx.get(served.url + "/readyz").json()
        assert ready["store"] == {"memory": "memory", "sqlite": "sqlite",
                                  "postgres": "postgresql"}[name]


def test_a_long_await_key_suspends_the_run_on_every_store(
        servers: dict[str, Served]) -> None:
    statuses = {}
    for name, served in servers.items():
        # random, so that PostgreSQL cannot compress the index entry under its limit
        run = served.start("payment", {"order_id": secrets.token_hex(4000)})
        statuses[name] = served.settle(run["id"], timeout=3)["status"]
        served.client.post(f"/runs/{run['id']}/cancel", json={"reason": "end of test"})
    assert statuses == dict.fromkeys(servers, "suspended")
    time.sleep(0.1)
