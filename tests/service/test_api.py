"""The HTTP API over real HTTP (uvicorn on 127.0.0.1), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.service.conftest import AUTH, Served, ThreadedServer, client, event, make_app

PROBLEM = "application/problem+json"


def test_a_run_started_over_http_is_driven_and_shown_whole(served: Served) -> None:
    response = served.client.post("/runs", json={"saga": "order", "input": {"order_id": "o-1"},
                                                 "correlation_id": "corr-o-1"})
    assert response.status_code == 201
    started = response.json()
    assert response.headers["location"] == f"/runs/{started['id']}"
    assert (started["saga"], started["correlation_id"]) == ("order", "corr-o-1")
    run = served.settle(started["id"])
    assert run["status"] == "completed"
    assert [(s["name"], s["status"], s["attempt"]) for s in run["steps"]] == [
        ("reserve", "succeeded", 1), ("charge", "succeeded", 1), ("ship", "succeeded", 1)]
    assert run["steps"][1]["result"] == {"charge_id": "ch-o-1"}
    assert run["errors"] == []
    assert run["compensations"] == []
    kinds = [h["kind"] for h in run["history"]]
    assert kinds[0] == "run.started"
    assert kinds[-1] == "run.completed"
    (shipped,) = run["events"]
    assert shipped["event"]["type"] == "shop.order.shipped"
    assert shipped["event"]["correlationid"] == "corr-o-1"
    assert [c["id"] for c in shipped["causation_chain"]] == [shipped["event"]["id"]]


def test_a_compensated_run_shows_its_errors_compensations_and_path(served: Served) -> None:
    started = served.start("order", {"order_id": "o-2", "fail_at": "ship"})
    run = served.settle(started["id"])
    assert run["status"] == "compensated"
    assert [c["step"] for c in run["compensations"]] == ["charge", "reserve"]
    assert all(c["status"] == "succeeded" for c in run["compensations"])
    assert [(e["kind"], e["step"]) for e in run["errors"]] == [("step.failed", "ship")]
    assert "ship refused for order o-2" in run["errors"][0]["error"]
    svg = served.client.get(f"/runs/{started['id']}/graph")
    assert svg.headers["content-type"] == "image/svg+xml"
    text = svg.text
    assert 'class="edge taken fail"' in text
    assert text.count('class="edge taken undo"') == 2
    assert '<g id="compensated" class="mark-done current">' in text
    assert '<g id="undo_charge" class="mark-undone">' in text
    mermaid = served.client.get(f"/runs/{started['id']}/graph", params={"format": "mermaid"})
    assert mermaid.text.startswith("flowchart TD")
    assert "linkStyle" in mermaid.text


def test_an_idempotency_key_starts_one_run_however_often_it_is_sent(served: Served) -> None:
    body = {"saga": "order", "input": {"order_id": "o-3"}, "correlation_id": "corr-o-3"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = served.client.post("/runs", json=body, headers=key)
    assert first.status_code == 201
    again = served.client.post("/runs", json=body, headers=key)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # the same key sent at once by many clients: still one run
    racing = {"Idempotency-Key": str(uuid.uuid4())}
    race_body = {**body, "correlation_id": "corr-race"}
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: httpx.post(served.url + "/runs", json=race_body,
                                                     headers={**racing, **AUTH}, timeout=30),
                                range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 11 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = served.client.get("/runs", params={"correlation_id": "corr-race"}).json()["runs"]
    assert len(listed) == 1
    reused = served.client.post("/runs", json={**body, "input": {"order_id": "other"}},
                                headers=key)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    assert served.client.post("/runs", json=body, headers={"Idempotency-Key": ""}
                              ).status_code == 400


def test_runs_are_listed_newest_first_filtered_and_paged(served: Served) -> None:
    ids = [served.start("order", {"order_id": f"p-{i}"}, correlation_id="batch-1")["id"]
           for i in range(7)]
    payment = served.start("payment", {"order_id": "p-x"}, correlation_id="batch-1")["id"]
    for run_id in [*ids, payment]:
        served.settle(run_id)
    seen: list[str] = []
    url: str | None = "/runs?correlation_id=batch-1&saga=order&limit=3"
    while url:
        page = served.client.get(url).json()
        assert len(page["runs"]) <= 3
        seen += [r["id"] for r in page["runs"]]
        url = page["next"]
    assert seen == list(reversed(ids))
    suspended = served.client.get("/runs", params={"status": "suspended"}).json()["runs"]
    assert [r["id"] for r in suspended] == [payment]
    bad = served.client.get("/runs", params={"status": "sleeping"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == PROBLEM
    assert served.client.get("/runs", params={"limit": 0}).status_code == 400


def test_a_signed_event_resumes_the_awaiting_run_and_starts_triggered_ones(served: Served
                                                                             ) -> None:
    waiting = served.start("payment", {"order_id": "o-4"})
    suspended = served.settle(waiting["id"])
    # where it stands, as the saga names it (never the machine's run_1)
    assert (suspended["status"], suspended["state"]) == ("suspended", "await_settlement")
    settled = event("shop.payment.settled", {"order_id": "o-4", "amount": 1250})
    answer = served.post_event(settled)
    assert answer.status_code == 202, answer.text
    assert answer.json()["resumed"] == [waiting["id"]]
    run = served.settle(waiting["id"])
    assert run["status"] == "completed"
    assert any(h["kind"] == "await.resumed" for h in run["history"])
    (received,) = [e for e in run["events"] if e["direction"] == "in"]
    assert received["event"]["id"] == settled["id"]
    assert [c["id"] for c in received["causation_chain"]] == [settled["id"]]
    placed = event("shop.order.placed", {"order_id": "o-5"}, correlationid="corr-o-5")
    answer = served.post_event(placed)
    assert answer.status_code == 202
    (started,) = answer.json()["started"]
    run = served.settle(started)
    assert run["status"] == "completed"
    assert (run["causation_id"], run["correlation_id"]) == (placed["id"], "corr-o-5")
    assert [c["type"] for c in run["cause"]] == ["shop.order.placed"]
    (shipped,) = run["events"]
    assert [c["type"] for c in shipped["causation_chain"]] == ["shop.order.placed",
                                                               "shop.order.shipped"]


def test_an_event_in_binary_mode_signs_its_ce_headers_too(served: Served) -> None:
    waiting = served.start("payment", {"order_id": "o-6"})
    served.settle(waiting["id"])
    raw = event("shop.payment.settled", {"order_id": "o-6", "amount": 5})
    ce = {f"ce-{k}": str(v) for k, v in raw.items() if k not in ("data", "datacontenttype")}
    body = json.dumps(raw["data"]).encode()
    headers = {"Content-Type": "application/json", **ce, **served.signed(body, ce=ce)}
    tampered = {**headers, "ce-id": str(uuid.uuid4())}
    assert served.client.post("/events", content=body, headers=tampered).status_code == 401
    answer = served.client.post("/events", content=body, headers=headers)
    assert answer.status_code == 202
    assert answer.json()["mode"] == "binary"
    assert served.settle(waiting["id"])["status"] == "completed"


def test_cancel_compensates_and_retry_resumes_a_halted_run(served: Served, tmp_path: Path
                                                           ) -> None:
    waiting = served.start("payment", {"order_id": "o-7"})
    served.settle(waiting["id"])
    answer = served.client.post(f"/runs/{waiting['id']}/cancel", json={"reason": "changed mind"})
    assert answer.status_code == 202
    run = served.settle(waiting["id"], lambda r: r["status"] == "cancelled")
    assert run["status"] == "cancelled"
    assert [c["step"] for c in run["compensations"]] == ["hold"]
    again = served.client.post(f"/runs/{waiting['id']}/cancel", json={"reason": "again"})
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    blocker = tmp_path / "refunds-blocked"
    blocker.write_text("")
    stuck = served.start("order", {"order_id": "o-8", "fail_at": "ship",
                                   "refund_blocked_by": str(blocker)})
    run = served.settle(stuck["id"])
    assert run["status"] == "compensation_failed"
    assert run["compensations"][0] == {"step": "charge", "status": "failed", "attempt": 1,
                                       "error": run["compensations"][0]["error"]}
    blocker.unlink()
    assert served.client.post(f"/runs/{stuck['id']}/retry", json={}).status_code == 202
    assert served.settle(stuck["id"], lambda r: r["status"] == "compensated")["status"] == (
        "compensated")
    refused = served.client.post(f"/runs/{stuck['id']}/retry", json={})
    assert refused.status_code == 409
    assert "only a run in" in refused.json()["detail"]
    missing = served.client.post("/runs/no-such-run/retry", json={})
    assert missing.status_code == 404
    assert missing.json()["run_id"] == "no-such-run"


def test_sagas_their_yaml_and_diagrams(served: Served) -> None:
    sagas = {s["name"]: s for s in served.client.get("/sagas").json()["sagas"]}
    assert set(sagas) == {"order", "payment"}
    assert sagas["order"]["trigger"] == "shop.order.placed"
    order = served.client.get("/sagas/order").json()
    (v1,) = order["versions"]
    assert v1["version"] == 1
    assert v1["yaml"].startswith("name: order")
    assert v1["definition"]["steps"][0]["name"] == "reserve"
    svg = served.client.get("/sagas/order/graph")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert "<svg" in svg.text
    mermaid = served.client.get("/sagas/order/graph", headers={"Accept": "text/plain"})
    assert mermaid.text.startswith("flowchart TD")
    missing = served.client.get("/sagas/nope/graph")
    assert missing.status_code == 404
    assert "known: order, payment" in missing.json()["detail"]
    assert served.client.get("/sagas/order/graph", params={"version": 9}).status_code == 404


def test_health_readiness_and_metrics(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}
    ready = served.client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["worker"] is True
    done = served.start("order", {"order_id": "m-1"})
    failed = served.start("order", {"order_id": "m-2", "fail_at": "ship"})
    waiting = served.start("payment", {"order_id": "m-3"})
    for run in (done, failed, waiting):
        served.settle(run["id"])
    text = served.client.get("/metrics").text
    assert 'concordia_runs_started_total{saga="order"} 2.0' in text
    assert 'concordia_runs_completed_total{saga="order"} 1.0' in text
    assert 'concordia_runs_compensated_total{saga="order"} 1.0' in text
    assert 'concordia_runs{saga="payment",status="suspended"} 1.0' in text
    assert 'concordia_runs{saga="order",status="compensation_failed"} 0.0' in text
    assert ('concordia_step_duration_seconds_count{kind="action",outcome="ok",saga="order",'
            'step="charge"} 2.0') in text
    assert ('concordia_step_duration_seconds_count{kind="compensation",outcome="ok",'
            'saga="order",step="refund"}') not in text  # labelled by step, not handler
    assert 'step="charge"} 1.0' in text.split("kind=\"compensation\"", 1)[1]
    # the shipped order's persistent event waits in the outbox (no bus here to take it)
    pending = re.search(r"^concordia_outbox_pending_events (\S+)$", text, re.MULTILINE)
    lag = re.search(r"^concordia_outbox_lag_seconds (\S+)$", text, re.MULTILINE)
    assert pending is not None
    assert float(pending.group(1)) == 1.0
    assert lag is not None
    assert 0.0 < float(lag.group(1)) < 120.0
    assert 'concordia_api_runs_requested_total{outcome="started"} 3.0' in text
    # the waiting run holds no lease: nothing has lapsed
    assert 'concordia_runs_lease_expired{saga="payment"} 0.0' in text


def test_the_openapi_document_validates_and_errors_are_problem_details(served: Served) -> None:
    document = served.client.get("/openapi.json").json()
    validate(document)
    assert {"/runs", "/runs/{run_id}", "/runs/{run_id}/cancel", "/runs/{run_id}/retry",
            "/events", "/sagas", "/sagas/{name}", "/sagas/{name}/graph", "/healthz",
            "/readyz", "/metrics"} <= set(document["paths"])
    missing = served.client.get("/runs/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json()["detail"] == "no run 'nope' in the store"
    malformed = served.client.post("/runs", content=b"{not json",
                                   headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == PROBLEM
    unknown = served.client.post("/runs", json={"saga": "nope", "input": {}})
    assert unknown.status_code == 404
    assert unknown.json()["saga"] == "nope"
    invalid = served.client.post("/runs", json={"saga": "order", "input": {"order_id": 7}})
    assert invalid.status_code == 422
    assert invalid.json()["field"] == "order_id"
    extra = served.client.post("/runs", json={"saga": "order", "input": {}, "colour": "red"})
    assert extra.status_code == 422
    assert extra.json()["errors"][0]["field"] == "body/colour"
    assert served.client.get("/nowhere").json()["type"].endswith("/not-found")


def test_without_a_worker_the_api_leaves_runs_to_workers(store_url: str) -> None:
    app, engine = make_app(store_url, worker=False)
    with ThreadedServer(app) as url, client(url) as http:
        run = http.post("/runs", json={"saga": "order", "input": {"order_id": "w-1"}}).json()
        stored = engine.store.get_run(run["id"])
        assert (stored.status, stored.lease_owner) == ("running", None)  # free for workers
        assert http.get("/readyz").json()["worker"] is False
        waiting = http.post("/runs", json={"saga": "payment", "input": {"order_id": "w-2"}})
        answer = http.post(f"/runs/{waiting.json()['id']}/cancel", json={"reason": "r"})
        assert answer.status_code == 202  # asked for; a worker compensates
        assert engine.store.get_run(waiting.json()["id"]).cancel_reason == "r"


@pytest.mark.parametrize("path", ["/ui/", "/ui/runs/x", "/ui/sagas/order"])
def test_the_page_shell_and_its_assets_are_served_from_the_package(served: Served,
                                                                   path: str) -> None:
    shell = served.client.get(path)
    assert shell.status_code == 200
    assert "text/html" in shell.headers["content-type"]
    assert "script-src 'self'" in shell.headers["content-security-policy"]
    assert '<script src="/ui/static/app.js"' in shell.text
    for asset in ("/ui/static/app.js", "/ui/static/app.css"):
        assert served.client.get(asset).status_code == 200
    assert served.client.get("/", follow_redirects=False).headers["location"] == "/ui/"


@pytest.mark.parametrize(("fail_at", "failed"), [("dispatch", "step_dispatch"),
                                                 ("ship", "step_pay_order")])
def test_a_fan_out_and_a_child_saga_are_undone_as_their_nodes(tmp_path: Path, fail_at: str,
                                                                failed: str) -> None:
    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", fanout=True)
    with ThreadedServer(app) as url, client(url) as http:
        served = Served(url, engine, http, "")
        started = served.start("bundle", {"order_id": "fan-1", "items": ["a", "b", "c"],
                                          "fail_at": fail_at})
        run = served.settle(started["id"], lambda r: r["status"] == "compensated")
        assert run["status"] == "compensated"
        mermaid = http.get(f"/runs/{started['id']}/graph", params={"format": "mermaid"}).text
        marked = {mark: set(nodes.split(",")) for nodes, mark in re.findall(
            r"^    class (\S+) (done|failed|undone)$", mermaid, re.MULTILINE)}
        # each item's compensation is its step's: one node, undone (never pack_items[0])
        assert marked["undone"] == {"undo_pack_items", "undo_pay_order"}
        assert marked["failed"] == {failed}
        assert all("[" not in node for nodes in marked.values() for node in nodes)
        svg = http.get(f"/runs/{started['id']}/graph").text
        assert '<g id="undo_pack_items" class="mark-undone">' in svg
        assert '<g id="undo_pay_order" class="mark-undone">' in svg
        assert svg.count('class="edge taken undo"') == 2
