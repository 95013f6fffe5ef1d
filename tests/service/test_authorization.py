"""Who may call what: every operation of the OpenAPI document against every kind of
credential, the Host check (DNS rebinding), cross-site requests and non-JSON bodies.

The matrix is generated from the served document: each operation's declared access
(``x-concordia-access``) says what each credential must get, and a new operation that
this file has no example request for fails the test rather than go unchecked. Every
refusal must leave the store exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.service.conftest import (
    ADMIN,
    AUDIENCE,
    AUTH,
    OPERATOR,
    READER,
    Served,
    ThreadedServer,
    bearer,
    client,
    credentials,
    jwt_for,
    make_app,
)

WRONG = "wrong-0123456789abcdef0123456789abcdef"


@pytest.fixture
def matrix_served(tmp_path: Path) -> Iterator[Served]:
    """An API without a worker (nothing moves but what requests do) taking tokens and
    JWTs, with one run in it."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app, engine = make_app(url, worker=False, creds=credentials(tmp_path))
    with ThreadedServer(app) as base, client(base) as http:
        served = Served(base, engine, http, url)
        served.start("order", {"order_id": "matrix-1"})
        try:
            yield served
        finally:
            served.close()


def _credentials() -> dict[str, dict[str, str]]:
    return {
        "none": {},
        "wrong token": bearer(WRONG),
        "read token": bearer(READER),
        "operate token": bearer(OPERATOR),
        "expired JWT": bearer(jwt_for(expires_in=-120)),
        "wrong-audience JWT": bearer(jwt_for(audience="another-api")),
        "valid JWT": bearer(jwt_for()),
    }


# What each credential gets from an operation of each access: "ok" is the route's own
# answer (the gate let it through).
EXPECTED: dict[str, dict[str, int | str]] = {
    "read": {"none": 401, "wrong token": 401, "read token": "ok", "operate token": 403,
             "expired JWT": 401, "wrong-audience JWT": 401, "valid JWT": "ok"},
    "operate": {"none": 401, "wrong token": 401, "read token": 403, "operate token": "ok",
                "expired JWT": 401, "wrong-audience JWT": 401, "valid JWT": "ok"},
    "health": dict.fromkeys(_credentials(), "ok"),
    "page": dict.fromkeys(_credentials(), "ok"),
    # POST /events: a token is no signature; every unsigned request is its 401.
    "webhook": dict.fromkeys(_credentials(), 401),
}

# An example request per operation: its path parameters and body.
PARAMS = {"run_id": "RUN", "name": "order", "point": "0"}
BODIES: dict[str, Any] = {"startRun": {"saga": "order", "input": {"order_id": "matrix-2"}},
                          "cancelRun": {"reason": "matrix"}, "retryRun": {}}
ROUTE_ANSWERS = {"startRun": {200, 201}, "cancelRun": {202, 409}, "retryRun": {409},
                 "post_event_events_post": {401}}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(method, path, operationId, access) of every operation, and the document itself."""
    out = [("GET", "/openapi.json", "openapi", "read")]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            out.append((method.upper(), path, operation["operationId"],
                        operation["x-concordia-access"]))
    return out


def test_every_operation_answers_each_credential_as_its_access_says(
        matrix_served: Served) -> None:
    served = matrix_served
    document = served.client.get("/openapi.json").json()
    run_id = served.client.get("/runs").json()["runs"][0]["id"]
    operations = _operations(document)
    # (the page's shell is not in the document: its test is below)
    assert {access for *_, access in operations} == set(EXPECTED) - {"page"}
    checked = 0
    for method, template, operation_id, access in operations:
        path = template
        for name, value in PARAMS.items():
            path = path.replace("{" + name + "}", run_id if value == "RUN" else value)
        assert "{" not in path, f"no example for a parameter of {template}"
        body = BODIES.get(operation_id)
        if method == "POST" and operation_id not in ROUTE_ANSWERS:
            pytest.fail(f"no example request for {operation_id}: add one to this test")
        for who, headers in _credentials().items():
            before = served.journal()
            answer = httpx.request(method, served.url + path, headers=headers,
                                   json=body if method == "POST" else None, timeout=30)
            expected = EXPECTED[access][who]
            where = f"{method} {path} with {who}: {answer.status_code} {answer.text[:300]}"
            if expected == "ok":
                assert answer.status_code in ROUTE_ANSWERS.get(operation_id, {200}), where
            else:
                assert answer.status_code == expected, where
                assert answer.headers["content-type"] == "application/problem+json", where
                assert served.journal() == before, where
                if expected == 401 and access != "webhook":
                    assert answer.headers["www-authenticate"].startswith("Bearer"), where
            checked += 1
    assert checked == len(operations) * len(_credentials())


def test_denials_are_counted_by_reason_and_logged_without_the_token(served: Served) -> None:
    with capture_logs() as logs:
        assert httpx.get(served.url + "/runs", headers=bearer(WRONG)).status_code == 401
        assert httpx.get(served.url + "/runs").status_code == 401
        refused = httpx.post(served.url + "/runs", json={"saga": "order"},
                             headers=bearer(READER))
    assert refused.status_code == 403
    assert refused.json()["scope"] == "concordia.operate"
    assert 'scope="concordia.operate"' in refused.headers["www-authenticate"]
    denied = [e for e in logs if e["event"] == "request.denied"]
    assert [(e["reason"], e["principal"]) for e in denied] == [
        ("invalid_token", None), ("missing_credentials", None),
        ("insufficient_scope", "token:reader")]
    assert not any(secret in repr(logs) for secret in (WRONG, READER, ADMIN))
    metrics = served.client.get("/metrics").text
    for reason in ("invalid_token", "missing_credentials", "insufficient_scope"):
        assert f'concordia_api_denied_total{{reason="{reason}"}} 1.0' in metrics


def test_a_jwt_names_its_subject_in_the_log_and_its_scopes_come_from_scope_or_scp(
        tmp_path: Path) -> None:
    app, _ = make_app(f"sqlite:///{tmp_path / 'runs.db'}", worker=False,
                      creds=credentials(tmp_path))
    with ThreadedServer(app) as base, capture_logs() as logs:
        reader = bearer(jwt_for("openid concordia.read", subject="dash-1"))
        assert httpx.get(base + "/runs", headers=reader).status_code == 200
        assert httpx.post(base + "/runs", headers=reader, json={}).status_code == 403
        scp = bearer(jwt_for("", subject="bot-2"))
        assert httpx.get(base + "/sagas", headers=scp).status_code == 403
        import jwt as pyjwt

        from tests.service.conftest import ISSUER, JWT_KEY
        now = int(time.time())
        listed = pyjwt.encode({"iss": ISSUER, "aud": [AUDIENCE, "other"], "sub": "bot-3",
                               "exp": now + 60, "scp": ["concordia.read"]}, JWT_KEY,
                              algorithm="ES256", headers={"kid": "k1"})
        assert httpx.get(base + "/sagas", headers=bearer(listed)).status_code == 200
    principals = [e.get("principal") for e in logs if e["event"] == "request.denied"]
    assert principals == ["jwt:dash-1", "jwt:bot-2"]


@pytest.mark.parametrize("path", ["/runs", "/ui/", "/metrics", "/openapi.json"])
def test_a_request_naming_another_host_is_refused_421(served: Served, path: str) -> None:
    before = served.journal()
    # A page of attacker.example whose name now resolves to 127.0.0.1 (DNS rebinding).
    answer = httpx.get(served.url + path, headers={**AUTH, "Host": "attacker.example"})
    assert answer.status_code == 421
    assert answer.json()["type"].endswith("/host-not-allowed")
    posted = httpx.post(served.url + "/runs", headers={**AUTH, "Host": "attacker.example:80"},
                        json={"saga": "order", "input": {"order_id": "rebound"}})
    assert posted.status_code == 421
    assert served.journal() == before
    # The probes answer whatever the Host: an orchestrator addresses a server by its IP.
    assert httpx.get(served.url + "/healthz", headers={"Host": "10.1.2.3"}).status_code == 200
    assert httpx.head(served.url + "/readyz", headers={"Host": "10.1.2.3"}).status_code == 405
    for host in ("localhost", "127.0.0.1:8080", "[::1]:1", "LOCALHOST."):
        assert httpx.get(served.url + "/runs", headers={**AUTH, "Host": host}
                         ).status_code == 200, host


def test_allowed_hosts_are_the_loopback_names_the_bound_name_and_those_given(
        tmp_path: Path) -> None:
    from concordia.service.guard import allowed_hosts

    assert allowed_hosts() == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0", ["API.example.com."]) == {
        "localhost", "127.0.0.1", "::1", "api.example.com"}
    assert "concordia.internal" in allowed_hosts("concordia.internal")
    app, _ = make_app(f"sqlite:///{tmp_path / 'runs.db'}", worker=False,
                      allowed_hosts=allowed_hosts("0.0.0.0", ["api.example.com"]))
    with ThreadedServer(app) as base:
        named = httpx.get(base + "/runs", headers={**AUTH, "Host": "api.example.com"})
        assert named.status_code == 200
        other = httpx.get(base + "/runs", headers={**AUTH, "Host": "other.example.com"})
        assert other.status_code == 421


def _stuck_run(served: Served) -> str:
    return str(served.start("payment", {"order_id": "csrf"})["id"])


def test_a_cross_site_form_post_cannot_change_a_run(served: Served) -> None:
    run_id = _stuck_run(served)
    served.settle(run_id)
    before = served.journal()
    form = {"Origin": "http://evil.example",
            "Content-Type": "application/x-www-form-urlencoded"}
    # As a browser sends it: no credential (a page cannot add one to a form post).
    anonymous = httpx.post(f"{served.url}/runs/{run_id}/retry", headers=form, content=b"x=1")
    assert anonymous.status_code == 401
    # Even if one were sent, or the server took requests without credentials: refused.
    with_token = httpx.post(f"{served.url}/runs/{run_id}/cancel", headers={**form, **AUTH},
                            content=b"reason=x")
    assert with_token.status_code == 403
    assert with_token.json()["type"].endswith("/cross-origin")
    fetched = httpx.post(f"{served.url}/runs/{run_id}/cancel", json={"reason": "x"},
                         headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403
    assert served.journal() == before
    same = httpx.post(f"{served.url}/runs/{run_id}/cancel", json={"reason": "ok"},
                      headers={**AUTH, "Origin": served.url, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 202


def test_without_credentials_a_cross_site_request_is_still_refused(tmp_path: Path) -> None:
    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", worker=False,
                           insecure_no_auth=True)
    with ThreadedServer(app) as base:
        run = httpx.post(base + "/runs", json={"saga": "payment", "input": {"order_id": "i"}})
        assert run.status_code == 201  # no credential asked for
        target = f"{base}/runs/{run.json()['id']}"
        for path, headers in (
                ("/retry", {"Origin": "http://evil.example",
                            "Content-Type": "application/x-www-form-urlencoded"}),
                ("/cancel", {"Content-Type": "text/plain"}),
                ("/cancel", {"Origin": "null", "Content-Type": "application/json"})):
            answer = httpx.post(target + path, headers=headers, content=b'{"reason": "x"}')
            assert answer.status_code in (403, 415), (path, headers, answer.text)
        assert engine.store.get_run(run.json()["id"]).cancel_reason is None


@pytest.mark.parametrize(("path", "content_type"), [
    ("/runs", "application/x-www-form-urlencoded"),
    ("/runs", "text/plain"),
    ("/runs", "multipart/form-data; boundary=x"),
    ("/runs", None),
    ("/runs/RUN/cancel", "text/plain"),
    ("/runs/RUN/retry", None),
    ("/runs/RUN/retry", "application/cloudevents+json"),
])
def test_what_changes_runs_takes_json_only(served: Served, path: str,
                                           content_type: str | None) -> None:
    run_id = _stuck_run(served)
    served.settle(run_id)
    before = served.journal()
    body = b'{"saga": "order", "input": {"order_id": "x"}, "reason": "r"}'
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    answer = httpx.post(served.url + path.replace("RUN", run_id), content=body,
                        headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.json()["type"].endswith("/unsupported-media-type")
    assert answer.json()["instance"] == path.replace("RUN", run_id)
    assert served.journal() == before


def test_the_page_shell_loads_without_a_credential_and_shows_no_data(served: Served) -> None:
    served.start("order", {"order_id": "secret-order-42"}, correlation_id="corr-secret")
    for path in ("/ui/", "/ui/static/app.js", "/ui/static/app.css", "/ui/runs/x"):
        answer = httpx.get(served.url + path)
        assert answer.status_code == 200, path
        assert "secret-order-42" not in answer.text
        assert "corr-secret" not in answer.text
    assert httpx.get(served.url + "/ui/../runs").status_code == 401
