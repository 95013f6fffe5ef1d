"""The OpenAPI document says what each operation answers, and the API answers what it says.

Every operation declares its 2xx answers: a schema for a JSON answer, a media type for
any other. A live answer of every read operation of the document (each run of a saga
that exercises every part of a run: fan-out items, a child saga, compensations, a failed
compensation, awaits resumed by events, a trigger's causation chain, policy decisions),
and the answers to starting, cancelling and retrying runs and to delivering events, each
validates against the schema the document declares for its status and media type
(JSON Schema 2020-12, with the document's components). On the memory store: what is
checked is the answers' shape, which no store changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.service.conftest import (
    POLICY,
    Served,
    ThreadedServer,
    client,
    event,
    make_app,
)

# Example values of the path parameters of the read operations.
RUN_PARAMS = {"run_id"}
SAGA_PARAMS = {"name"}
POINTS = ("0", "1")  # a failure map's whole picture, and its first point
# Further queries of the read operations (the default query is always sent).
QUERIES: dict[str, list[dict[str, Any]]] = {
    "/runs": [{"limit": 1}, {"saga": "order", "status": "compensated"},
              {"correlation_id": "corr-answers"}],
    "/runs/{run_id}/graph": [{"format": "mermaid"}],
    "/sagas/{name}/graph": [{"format": "mermaid"}, {"version": 1}],
}


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def check_answer(document: dict[str, Any], method: str, template: str,
                 answer: httpx.Response) -> None:
    """``answer`` is one the document declares for the operation: its status, its media
    type and, for JSON, its schema."""
    where = f"{method} {answer.request.url} → {answer.status_code}"
    operation = document["paths"][template][method.lower()]
    declared = operation["responses"].get(str(answer.status_code))
    assert declared is not None, f"{where}: the document declares no such status"
    media = answer.headers.get("content-type", "").split(";")[0].strip()
    content = declared.get("content", {})
    assert media in content, f"{where}: {media} is not among {sorted(content)}"
    if not is_json(media):
        return
    schema = {**content[media]["schema"], "components": document["components"]}
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(answer.json()), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}: " + "; ".join(
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:5])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Served, dict[str, Any]]]:
    """The app on the memory store over the shop, fan-out and policy sagas, and the
    document it serves."""
    app, engine = make_app("memory://", fanout=True, extra=(POLICY,))
    with ThreadedServer(app) as url, client(url) as http:
        served = Served(url, engine, http, "memory://")
        yield served, http.get("/openapi.json").json()


def test_every_operation_declares_what_it_answers() -> None:
    app, _engine = make_app("memory://", worker=False, fanout=True, extra=(POLICY,))
    document = app.openapi()
    Draft202012Validator.check_schema({"components": document["components"]})
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            answers = {status: r for status, r in operation["responses"].items()
                       if status.startswith("2")}
            assert answers, f"{where} declares no 2xx answer"
            for status, declared in answers.items():
                content = declared.get("content")
                assert content, f"{where} {status} declares no media type"
                for media, described in content.items():
                    schema = described.get("schema")
                    if is_json(media):
                        # an empty schema says nothing about the answer
                        assert schema, f"{where} {status} {media} has no schema"
                        Draft202012Validator.check_schema(schema)


def _runs(served: Served, blocker: Path) -> dict[str, str]:
    """Runs in every shape a run can take, each settled: their ids by order id."""
    blocked = {"fail_at": "ship", "refund_blocked_by": str(blocker)}
    starts: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
        "a-1": ("order", {}, {"correlation_id": "corr-answers"}),
        "a-2": ("order", {"fail_at": "ship"}, {}),
        "a-3": ("order", blocked, {}),  # compensation_failed, then retried
        "a-4": ("order", blocked, {}),  # left in compensation_failed
        "a-5": ("bundle", {"items": ["x", "y"], "fail_at": "ship"}, {}),
        "a-6": ("bundle", {"items": ["x"], "fail_at": "none"}, {}),
        "a-7": ("payment", {}, {}),  # resumed by an event
        "a-8": ("payment", {}, {}),  # cancelled
        "a-9": ("payment", {}, {}),  # left suspended
        "a-10": ("refund", {"amount": 40}, {}),
        "a-11": ("refund", {"amount": 400}, {})}
    ids = {order: served.start(saga, {"order_id": order, **input}, **extra)["id"]
           for order, (saga, input, extra) in starts.items()}
    for run_id in ids.values():
        served.settle(run_id)
    resumed = served.post_event(event("shop.payment.settled", {"order_id": "a-7",
                                                                "amount": 10}))
    assert resumed.status_code == 202, resumed.text
    triggered = served.post_event(event("shop.order.placed", {"order_id": "a-12"},
                                        correlationid="corr-answers"))
    assert triggered.status_code == 202, triggered.text
    (ids["a-12"],) = triggered.json()["started"]
    for run_id in ids.values():
        served.settle(run_id)
    return ids


def test_live_answers_validate_against_the_document(world: tuple[Served, dict[str, Any]],
                                                    tmp_path: Path) -> None:
    served, document = world
    http = served.client
    check = check_answer
    # what changes runs answers, on the way to runs in every shape
    body = {"saga": "order", "input": {"order_id": "a-0"}}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    check(document, "POST", "/runs", http.post("/runs", json=body, headers=key))
    check(document, "POST", "/runs", http.post("/runs", json=body, headers=key))  # replayed
    blocker = tmp_path / "refunds-blocked"
    blocker.write_text("")
    ids = _runs(served, blocker)
    cancelled = http.post(f"/runs/{ids['a-8']}/cancel", json={"reason": "no longer wanted"})
    check(document, "POST", "/runs/{run_id}/cancel", cancelled)
    assert served.settle(ids["a-3"])["status"] == "compensation_failed"
    blocker.unlink()
    retried = http.post(f"/runs/{ids['a-3']}/retry", json={})
    check(document, "POST", "/runs/{run_id}/retry", retried)
    check(document, "POST", "/events", served.post_event(
        event("shop.order.placed", {"order_id": "a-13"})))
    for run_id in ids.values():
        served.settle(run_id)

    run_ids = [r["id"] for r in http.get("/runs", params={"limit": 500}).json()["runs"]]
    sagas = [s["name"] for s in http.get("/sagas").json()["sagas"]]
    answered: dict[str, int] = {}
    for template, item in document["paths"].items():
        if "get" not in item:
            continue
        params = set(template.replace("}", "{").split("{")[1::2])
        if params - RUN_PARAMS - SAGA_PARAMS - {"point"}:
            pytest.fail(f"no example for the parameters of GET {template}: add one here")
        paths = ([template.replace("{run_id}", r) for r in run_ids] if params & RUN_PARAMS
                 else [template.replace("{name}", s) for s in sagas] if params & SAGA_PARAMS
                 else [template])
        if "point" in params:
            paths = [p.replace("{point}", n) for p in paths for n in POINTS]
        for path in paths:
            for query in [{}, *QUERIES.get(template, [])]:
                answer = http.get(path, params=query)
                assert answer.is_success, f"GET {answer.request.url}: {answer.text[:300]}"
                check(document, "GET", template, answer)
                answered[template] = answered.get(template, 0) + 1
    assert set(answered) == {t for t, item in document["paths"].items() if "get" in item}
    # an error is what the document says it is too
    check(document, "GET", "/runs/{run_id}", http.get("/runs/no-such-run"))

    # every part of a run was in some answer
    details = [http.get(f"/runs/{r}").json() for r in run_ids]
    statuses = {d["status"] for d in details}
    assert {"completed", "compensated", "failed", "cancelled", "suspended",
            "compensation_failed"} <= statuses
    assert any(d["decisions"] for d in details)
    assert any(s["items"] for d in details for s in d["steps"])
    assert any(s["error_detail"] for d in details for s in d["steps"])
    assert any(d["parent_run_id"] for d in details)
    assert {e["direction"] for d in details for e in d["events"]} == {"in", "out"}
    assert any(d["cause"] for d in details)
    assert any(d["errors"] and d["compensations"] for d in details)
