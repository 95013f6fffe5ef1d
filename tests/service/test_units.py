"""The service's pure parts: the CloudEvents HTTP binding, idempotency keys, the run's path."""

from __future__ import annotations

import json
import uuid

import pytest

from concordia.definitions.models import Saga
from concordia.machine.flow import build_flow
from concordia.machine.flow_path import path_taken
from concordia.service import idempotency
from concordia.service.cloudevents_http import read_event
from concordia.service.problems import Problem
from tests.runtime.sagas import load_catalog


def test_structured_and_binary_modes_read_the_same_event() -> None:
    body = {"specversion": "1.0", "id": "i", "source": "s", "type": "t", "time": "x",
            "data": {"a": 1}}
    structured, mode = read_event("application/cloudevents+json; charset=utf-8", {},
                                  json.dumps(body).encode())
    assert (structured, mode) == (body, "structured")
    headers = {"ce-specversion": "1.0", "ce-id": "i", "ce-source": "s", "ce-type": "t",
               "ce-time": "x", "ce-correlationid": "c%20d"}
    binary, mode = read_event("application/json", headers, b'{"a": 1}')
    assert mode == "binary"
    assert binary == {"specversion": "1.0", "id": "i", "source": "s", "type": "t",
                      "time": "x", "correlationid": "c d", "datacontenttype":
                      "application/json", "data": {"a": 1}}


@pytest.mark.parametrize(("content_type", "headers", "body", "status"), [
    ("application/cloudevents+json", {"ce-id": "x"}, b"{}", 400),
    ("application/cloudevents+json", {}, b"[1]", 400),
    ("application/cloudevents+json", {}, b"[" * 100_000, 400),
    ("application/json", {"ce-specversion": "1.0", "ce-data": "x"}, b"{}", 400),
    ("application/json", {"ce-specversion": "1.0", "ce-id": "%ff"}, b"{}", 400),
    ("application/json", {}, b"{}", 415),
    (None, {}, b"{}", 415),
])
def test_what_is_not_one_cloudevent_is_refused(content_type: str | None,
                                               headers: dict[str, str], body: bytes,
                                               status: int) -> None:
    with pytest.raises(Problem) as caught:
        read_event(content_type, headers, body)
    assert caught.value.status == status


def test_an_idempotency_key_names_one_run_id() -> None:
    a = idempotency.run_id_for("order-42")
    assert a == idempotency.run_id_for("order-42") != idempotency.run_id_for("order-43")
    parsed = uuid.UUID(a)
    assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
    for bad in ("", "x" * 256, "naïve", "tab\there"):
        with pytest.raises(Problem):
            idempotency.check_key(bad)


SAGA: Saga = load_catalog({
    "name": "s", "version": 1, "steps": [
        {"name": "a", "action": "x.a", "compensate": "x.ua"},
        {"name": "b", "action": "x.b", "compensate": "x.ub",
         "retry": {"attempts": 3, "backoff": {"initial": "1s", "factor": 2, "max": "4s"}}},
        {"name": "c", "action": "x.c", "compensate": "none", "reason": "last"}]}).saga("s")


def test_the_path_taken_follows_the_run_forward_then_back() -> None:
    flow = build_flow(SAGA)
    marks = {"step_a": "done", "step_b": "done", "step_c": "failed", "undo_b": "undone",
             "undo_a": "undone", "compensated": "done"}
    taken = {(flow.edges[i].source, flow.edges[i].target, flow.edges[i].kind)
             for i in path_taken(flow, marks, retried={"step_b"})}
    assert taken == {("start", "step_a", "next"), ("step_a", "step_b", "next"),
                     ("step_b", "step_c", "next"), ("step_b", "step_b", "retry"),
                     ("step_c", "undo_b", "fail"), ("undo_b", "undo_a", "undo"),
                     ("undo_a", "compensated", "undo")}
    running = {"step_a": "done", "step_b": "active"}
    assert {(flow.edges[i].source, flow.edges[i].target)
            for i in path_taken(flow, running)} == {("start", "step_a"), ("step_a", "step_b")}
