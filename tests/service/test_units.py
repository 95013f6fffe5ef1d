"""The service's pure parts: the CloudEvents HTTP binding and idempotency keys."""

from __future__ import annotations

import json
import uuid

import pytest

from concordia.service import idempotency
from concordia.service.cloudevents_http import read_event
from concordia.service.problems import Problem


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
