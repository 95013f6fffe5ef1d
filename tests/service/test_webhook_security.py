"""POST /events refuses what it must, with the right 4xx, and writes nothing when it does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import (
    DEFINITIONS,
    OLD_SECRET,
    SECRET,
    Served,
    ThreadedServer,
    client,
    event,
    make_app,
)

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def _post(served: Served, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return served.client.post("/events", content=body, headers=headers)


def _waiting(served: Served) -> tuple[str, bytes, dict[str, Any]]:
    """A payment run awaiting its settlement, and the (unsent) event that would resume it."""
    run = served.start("payment", {"order_id": "sec-1"})
    served.settle(run["id"])
    settled = event("shop.payment.settled", {"order_id": "sec-1", "amount": 10})
    return run["id"], json.dumps(settled).encode(), settled


def _unsigned(served: Served, body: bytes) -> dict[str, str]:
    return dict(STRUCTURED)


def _wrong_key(served: Served, body: bytes) -> dict[str, str]:
    return {**STRUCTURED, **served.signed(body, secrets=("not-the-secret-0123456789",))}


def _other_body(served: Served, body: bytes) -> dict[str, str]:
    return {**STRUCTURED, **served.signed(body.replace(b'"amount": 10', b'"amount": 99'))}


def _expired(served: Served, body: bytes) -> dict[str, str]:
    return {**STRUCTURED, **served.signed(body, at=int(time.time()) - 301)}


def _from_the_future(served: Served, body: bytes) -> dict[str, str]:
    return {**STRUCTURED, **served.signed(body, at=int(time.time()) + 301)}


def _malformed_header(served: Served, body: bytes) -> dict[str, str]:
    good = served.signed(body)["Concordia-Signature"]
    return {**STRUCTURED, "Concordia-Signature": good.replace("t=", "t=x")}


def _truncated_signature(served: Served, body: bytes) -> dict[str, str]:
    good = served.signed(body)["Concordia-Signature"]
    return {**STRUCTURED, "Concordia-Signature": good[:-1]}


def _non_ascii_signature(served: Served, body: bytes) -> dict[str, str]:
    good = served.signed(body)["Concordia-Signature"]
    return {**STRUCTURED, "Concordia-Signature": good + "é"}  # sent as Latin-1 bytes


REFUSED: list[tuple[str, Callable[[Served, bytes], dict[str, str]], str]] = [
    ("unsigned", _unsigned, "signature-missing"),
    ("wrong key", _wrong_key, "signature-mismatch"),
    ("signed another body", _other_body, "signature-mismatch"),
    ("expired timestamp", _expired, "signature-expired"),
    ("timestamp from the future", _from_the_future, "signature-expired"),
    ("malformed header", _malformed_header, "signature-malformed"),
    ("truncated signature", _truncated_signature, "signature-mismatch"),
    ("non-ASCII signature", _non_ascii_signature, "signature-malformed"),
]


@pytest.mark.parametrize(("case", "headers", "slug"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_request_not_signed_right_is_refused_401_and_writes_nothing(
        served: Served, case: str, headers: Callable[[Served, bytes], dict[str, str]],
        slug: str) -> None:
    run_id, body, settled = _waiting(served)
    before = served.journal()
    sent = {k: v.encode("latin-1") if not v.isascii() else v
            for k, v in headers(served, body).items()}
    answer = served.client.post("/events", content=body, headers=sent)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/" + slug)
    assert answer.headers["www-authenticate"].startswith("Concordia-HMAC-SHA256")
    time.sleep(0.1)
    assert served.journal() == before
    assert served.store.get_event(settled["id"]) is None
    assert served.client.get(f"/runs/{run_id}").json()["status"] == "suspended"


def test_a_replayed_event_is_refused_409_and_writes_nothing(served: Served) -> None:
    run_id, body, settled = _waiting(served)
    headers = {**STRUCTURED, **served.signed(body)}
    assert _post(served, body, headers).status_code == 202
    served.settle(run_id, lambda r: r["status"] == "completed")
    before = served.journal()
    for again in (headers, {**STRUCTURED, **served.signed(body)}):  # same, and re-signed
        answer = _post(served, body, again)
        assert answer.status_code == 409
        assert answer.json()["type"].endswith("/event-replayed")
        assert answer.json()["event_id"] == settled["id"]
    assert served.journal() == before


def test_replays_and_idempotency_keys_hold_across_a_restart(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    settled = event("shop.payment.settled", {"order_id": "nobody", "amount": 1})
    body = json.dumps(settled).encode()
    start = {"saga": "order", "input": {"order_id": "restart-1"}}
    key = {"Idempotency-Key": "restart-key-1"}
    started: list[str] = []
    for expected, again in ((202, 201), (409, 200)):  # a new server on the same store
        app, engine = make_app(url)
        with ThreadedServer(app) as base, client(base) as http:
            probe = Served(base, engine, http, url)  # for signing only
            answer = http.post("/events", content=body,
                               headers={**STRUCTURED, **probe.signed(body)})
            assert answer.status_code == expected, answer.text
            run = http.post("/runs", json=start, headers=key)
            assert run.status_code == again, run.text
            started.append(run.json()["id"])
    assert started[0] == started[1]


def _bad_body_cases() -> Iterator[tuple[str, bytes, dict[str, str], int, str]]:
    good = event("shop.payment.settled", {"order_id": "x", "amount": 1})
    yield "not JSON", b'{"specversion": "1.0", ', STRUCTURED, 400, "malformed-json"
    yield "not UTF-8", b'\xff\xfe{}', STRUCTURED, 400, "malformed-json"
    yield "NaN", json.dumps({**good, "data": {"amount": float("nan")}}).encode(), STRUCTURED, \
        400, "malformed-json"
    yield "an array", b"[]", STRUCTURED, 400, "invalid-event"
    yield "no id", json.dumps({k: v for k, v in good.items() if k != "id"}).encode(), \
        STRUCTURED, 400, "invalid-event"
    yield "id not a UUID", json.dumps({**good, "id": "42"}).encode(), STRUCTURED, 400, \
        "invalid-event"
    yield "unknown type", json.dumps({**good, "type": "shop.payment.setled"}).encode(), \
        STRUCTURED, 422, "invalid-event"
    yield "payload off schema", json.dumps({**good, "data": {"order_id": 5}}).encode(), \
        STRUCTURED, 422, "invalid-event"
    yield "plain text", b"hello", {"Content-Type": "text/plain"}, 415, "unsupported-media-type"
    yield "batch", b"[]", {"Content-Type": "application/cloudevents-batch+json"}, 415, \
        "unsupported-media-type"
    yield "binary without JSON data", b"x", {"Content-Type": "text/plain",
                                             "ce-specversion": "1.0"}, 415, \
        "unsupported-media-type"


BAD = list(_bad_body_cases())


@pytest.mark.parametrize(("case", "body", "headers", "status", "slug"), BAD,
                         ids=[c[0] for c in BAD])
def test_a_malformed_signed_request_gets_its_4xx_and_writes_nothing(
        served: Served, case: str, body: bytes, headers: dict[str, str], status: int,
        slug: str) -> None:
    _waiting(served)
    before = served.journal()
    ce = {k: v for k, v in headers.items() if k.startswith("ce-")}
    answer = _post(served, body, {**headers, **served.signed(body, ce=ce)})
    assert answer.status_code == status, answer.text
    assert answer.json()["type"].endswith("/" + slug)
    assert answer.json()["detail"]
    assert served.journal() == before


def test_an_oversized_request_is_refused_before_it_is_read(served: Served) -> None:
    _waiting(served)
    before = served.journal()
    big = json.dumps(event("shop.payment.settled",
                           {"order_id": "x" * 70_000, "amount": 1})).encode()
    declared = _post(served, big, {**STRUCTURED, **served.signed(big)})
    assert declared.status_code == 413
    assert declared.json()["type"].endswith("/body-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    streamed = served.client.post("/events", content=chunks(),
                                  headers={**STRUCTURED, **served.signed(big)})
    assert streamed.status_code == 413
    runs = served.client.post("/runs", content=b"{" + b" " * 70_000 + b"}",
                              headers={"Content-Type": "application/json"})
    assert runs.status_code == 413
    for answer, path in ((declared, "/events"), (streamed, "/events"), (runs, "/runs")):
        assert answer.json()["instance"] == path
    assert served.journal() == before


DUPLICATED = (b'{"specversion": "1.0", "id": "ID", "source": "urn:test:provider", '
              b'"type": "shop.payment.settled", "time": "2026-12-01T00:00:00Z", '
              b'"data": {"order_id": "sec-1", "amount": 10}, "type": "shop.order.placed"}')


def test_a_body_naming_a_key_twice_is_refused_as_the_command_line_refuses_it(
        served: Served, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import uuid

    from concordia.cli import main

    _waiting(served)
    before = served.journal()
    body = DUPLICATED.replace(b"ID", str(uuid.uuid4()).encode())
    event_answer = _post(served, body, {**STRUCTURED, **served.signed(body)})
    assert event_answer.status_code == 400, event_answer.text
    assert "duplicate key 'type'" in event_answer.json()["detail"]
    run_answer = served.client.post("/runs", content=b'{"saga": "order", "input": '
                                    b'{"order_id": "d"}, "saga": "payment"}',
                                    headers={"Content-Type": "application/json"})
    assert run_answer.status_code == 400, run_answer.text
    assert run_answer.json()["type"].endswith("/malformed-json")
    assert "duplicate key 'saga'" in run_answer.json()["detail"]
    assert served.journal() == before
    path = tmp_path / "event.json"
    path.write_bytes(body)
    assert main(["events", "send", str(path), "--store", served.store_url,
                 "--definitions", DEFINITIONS]) != 0
    assert "duplicate key 'type'" in capsys.readouterr().out


def test_keys_rotate_a_request_signed_with_any_active_key_is_taken(served: Served) -> None:
    for n, secrets in enumerate(((OLD_SECRET,), (SECRET,),
                                 ("retired-secret-0123456789", SECRET))):
        order = f"rotation-{n}"
        run = served.start("payment", {"order_id": order})
        served.settle(run["id"])
        settled = event("shop.payment.settled", {"order_id": order, "amount": 3})
        answer = served.post_event(settled, secrets=secrets)
        assert answer.status_code == 202
        assert answer.json()["resumed"] == [run["id"]]


def test_a_server_without_secrets_refuses_events_503(tmp_path: Any) -> None:
    app, _engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", secrets=())
    with ThreadedServer(app) as base:
        body = json.dumps(event("shop.payment.settled", {"order_id": "x", "amount": 1}))
        answer = httpx.post(base + "/events", content=body, headers=STRUCTURED)
        assert answer.status_code == 503
        assert "CONCORDIA_WEBHOOK_SECRETS" in answer.json()["detail"]


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"{not json", {"Content-Type": "application/json"}, 400),
    (b'{"saga": "order", "input": {"order_id": 7}}', {"Content-Type": "application/json"},
     422),
    (b'{"saga": "nope", "input": {}}', {"Content-Type": "application/json"}, 404),
    (b'{"saga": "order", "input": {}, "extra": 1}', {"Content-Type": "application/json"}, 422),
    (b'{"saga": "order", "input": {"order_id": "x"}}',
     {"Content-Type": "application/json", "Idempotency-Key": "k" * 256}, 400),
], ids=["not JSON", "input off schema", "unknown saga", "unknown field", "key too long"])
def test_a_malformed_run_request_gets_its_4xx_and_writes_nothing(
        served: Served, body: bytes, headers: dict[str, str], status: int) -> None:
    _waiting(served)
    before = served.journal()
    answer = served.client.post("/runs", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert served.journal() == before


def test_a_request_whose_length_is_not_a_number_is_refused_400(served: Served) -> None:
    import socket
    from urllib.parse import urlsplit

    _waiting(served)
    before = served.journal()
    where = urlsplit(served.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 12abc\r\n\r\n{}")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert served.journal() == before
