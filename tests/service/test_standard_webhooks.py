"""Standard Webhooks beside Concordia-Signature: a sender signing with the
``standardwebhooks`` package resumes an awaiting run, its replay is refused, and what is
not a good signature is a 401 that writes nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from concordia.service import standard_webhooks
from concordia.service.signatures import SignatureError
from tests.service.conftest import (
    OLD_SECRET,
    SECRET,
    Served,
    ThreadedServer,
    client,
    event,
    make_app,
)

KEY = bytes(range(7, 39))
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(bytes(32)).decode()
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


@pytest.fixture
def served(tmp_path: Any) -> Iterator[Served]:
    """The app with a whsec_ secret among the plain ones."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app, engine = make_app(url, secrets=(SECRET, OLD_SECRET, WHSEC))
    with ThreadedServer(app) as base, client(base) as http:
        served = Served(base, engine, http, url)
        try:
            yield served
        finally:
            served.close()


def sender_headers(secret: str, body: bytes, *, msg_id: str | None = None,
                   at: float | None = None) -> dict[str, str]:
    """The headers a sender using the standardwebhooks package sends."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


def _waiting(served: Served, order: str) -> tuple[str, bytes, dict[str, Any]]:
    run = served.start("payment", {"order_id": order})
    served.settle(run["id"])
    settled = event("shop.payment.settled", {"order_id": order, "amount": 10})
    return run["id"], json.dumps(settled).encode(), settled


def test_an_event_signed_by_a_standard_webhooks_sender_resumes_its_run_once(
        served: Served) -> None:
    run_id, body, settled = _waiting(served, "sw-1")
    headers = {**STRUCTURED, **sender_headers(WHSEC, body)}
    answer = served.client.post("/events", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["resumed"] == [run_id]
    assert served.settle(run_id, lambda r: r["status"] == "completed")["status"] == "completed"
    before = served.journal()
    # A replay, as sent and as a sender's retry re-signs it: refused by the inbox.
    for again in (headers, {**STRUCTURED, **sender_headers(WHSEC, body)}):
        replay = served.client.post("/events", content=body, headers=again)
        assert replay.status_code == 409, replay.text
        assert replay.json()["event_id"] == settled["id"]
    assert served.journal() == before


def _wrong_key(body: bytes) -> dict[str, str]:
    return sender_headers(OTHER, body)


def _expired(body: bytes) -> dict[str, str]:
    return sender_headers(WHSEC, body, at=time.time() - 301)


def _other_id(body: bytes) -> dict[str, str]:
    return {**sender_headers(WHSEC, body), "webhook-id": "msg_another"}


def _plain_secret(body: bytes) -> dict[str, str]:
    # A plain (Concordia-Signature) secret is not a Standard Webhooks key here.
    return sender_headers("whsec_" + base64.b64encode(SECRET.encode()).decode(), body)


def _non_ascii(body: bytes) -> dict[str, str]:
    good = sender_headers(WHSEC, body)
    return {**good, "webhook-signature": good["webhook-signature"] + "é"}


def _no_id(body: bytes) -> dict[str, str]:
    good = sender_headers(WHSEC, body)
    return {k: v for k, v in good.items() if k != "webhook-id"}


def _both_schemes(body: bytes) -> dict[str, str]:
    from concordia.service.signatures import signature_header

    return {**sender_headers(WHSEC, body),
            "Concordia-Signature": signature_header([SECRET], int(time.time()), body)}


REFUSED = [("wrong key", _wrong_key, "signature-mismatch"),
           ("expired", _expired, "signature-expired"),
           ("another webhook-id", _other_id, "signature-mismatch"),
           ("a plain secret's key", _plain_secret, "signature-mismatch"),
           ("non-ASCII signature", _non_ascii, "signature-malformed"),
           ("no webhook-id", _no_id, "signature-missing"),
           ("both schemes", _both_schemes, "signature-malformed")]


@pytest.mark.parametrize(("case", "make", "slug"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_standard_webhooks_request_not_signed_right_is_401_and_writes_nothing(
        served: Served, case: str, make: Any, slug: str) -> None:
    run_id, body, _ = _waiting(served, f"sw-{case}")
    before = served.journal()
    raw = make(body)
    headers = {k: v.encode("latin-1") if isinstance(v, str) and not v.isascii() else v
               for k, v in {**STRUCTURED, **raw}.items()}
    answer = served.client.post("/events", content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["type"].endswith("/" + slug)
    assert served.journal() == before
    assert served.client.get(f"/runs/{run_id}").json()["status"] == "suspended"


def test_a_binary_mode_event_is_not_taken_on_a_body_only_signature(served: Served) -> None:
    run_id, _, settled = _waiting(served, "sw-binary")
    ce = {f"ce-{k}": str(v) for k, v in settled.items() if k not in ("data",
                                                                     "datacontenttype")}
    body = json.dumps(settled["data"]).encode()
    answer = served.client.post("/events", content=body, headers={
        "Content-Type": "application/json", **ce, **sender_headers(WHSEC, body)})
    assert answer.status_code == 401
    assert "structured mode" in answer.json()["detail"]
    assert served.client.get(f"/runs/{run_id}").json()["status"] == "suspended"


@pytest.mark.parametrize(("headers", "reason"), [
    ({"webhook-id": "m", "webhook-timestamp": "1"}, "missing"),
    ({"webhook-id": "m", "webhook-timestamp": "1e9", "webhook-signature": "v1,AAAA"},
     "malformed"),
    ({"webhook-id": "with space", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
     "malformed"),
    ({"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1a,AAAA"},
     "malformed"),
    ({"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1:AAAA"},
     "malformed"),
    ({"webhook-id": "m", "webhook-timestamp": "1",
      "webhook-signature": " ".join(["v1,AAAA"] * 9)}, "malformed"),
])
def test_malformed_standard_webhooks_headers_are_refused_before_any_hmac(
        headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        standard_webhooks.verify((KEY,), headers, b"{}", {}, now=1, tolerance=300)
    assert caught.value.reason == reason


def test_signatures_of_other_versions_are_ignored_beside_a_good_v1() -> None:
    body = b'{"x": 1}'
    good = sender_headers(WHSEC, body, at=1000)
    headers = {**good, "webhook-signature": "v1a,c29tZXRoaW5n " + good["webhook-signature"]}
    parsed = standard_webhooks.verify((KEY,), headers, body, {}, now=1000, tolerance=300)
    assert parsed.signatures == (good["webhook-signature"],)


def test_a_scheme_the_server_has_no_key_for_is_a_401_not_an_outage(tmp_path: Any) -> None:
    from concordia.service.signatures import signature_header

    body = json.dumps(event("shop.payment.settled", {"order_id": "x", "amount": 1})).encode()
    for secrets, headers in (
            ((SECRET,), sender_headers(WHSEC, body)),
            ((WHSEC,), {"Concordia-Signature": signature_header([SECRET], int(time.time()),
                                                                body)})):
        app, _ = make_app(f"sqlite:///{tmp_path / f'{len(headers)}.db'}", secrets=secrets)
        with ThreadedServer(app) as base, client(base) as http:
            answer = http.post("/events", content=body, headers={**STRUCTURED, **headers})
            assert answer.status_code == 401, answer.text
            assert answer.json()["type"].endswith("/signature-unsupported")
