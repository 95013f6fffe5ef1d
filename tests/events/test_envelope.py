"""The CloudEvents envelope: building, structured-mode round trip, and refusals by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from concordia.errors import EventError
from concordia.events import Envelope, dataschema_for, new_event
from concordia.ids import is_uuid, uuid7_ms
from concordia.timestamps import parse_timestamp

RUN_ID = "01938f6e-7c1a-7cc2-9b6e-3f2d4c5b6a79"


def _event(**overrides: Any) -> Envelope:
    kwargs: dict[str, Any] = {"source": "/thunderline/cerebros", "version": 1,
                              "correlation_id": "corr-1", "causation_id": RUN_ID}
    kwargs.update(overrides)
    return new_event("ml.run.completed", {"run_id": RUN_ID, "score": 0.9}, **kwargs)


def _raw(**overrides: Any) -> dict[str, Any]:
    raw = _event().to_dict()
    for key, value in overrides.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def test_new_event_sets_every_attribute() -> None:
    event = _event()
    assert is_uuid(event.id)
    assert uuid7_ms(event.id) > 0
    assert event.specversion == "1.0"
    assert event.datacontenttype == "application/json"
    assert event.dataschema == "urn:concordia:event:ml.run.completed:v1"
    assert event.version == 1
    assert event.correlationid == event.correlation_id == "corr-1"
    assert event.causationid == event.causation_id == RUN_ID
    assert event.time.endswith("Z")
    assert parse_timestamp(event.time).tzinfo is not None


def test_a_root_event_correlates_with_itself() -> None:
    event = new_event("ml.run.completed", {}, source="/t")
    assert event.correlationid == event.id
    assert event.causationid is None
    assert event.version is None
    assert "dataschema" not in event.to_dict()


def test_time_can_be_given() -> None:
    moment = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert _event(time=moment).time == "2026-11-27T09:30:00.000000Z"


def test_structured_mode_round_trip_through_json() -> None:
    event = _event(subject="run/1", extensions={"traceparent": "00-abc-01", "priority": 3})
    text = json.dumps(event.to_dict())
    again = Envelope.from_dict(json.loads(text))
    assert again == event
    assert again.to_dict() == event.to_dict()
    assert json.loads(text)["correlationid"] == "corr-1"
    assert hash(again) == hash(event)


def test_dataversion_extension_gives_the_version() -> None:
    raw = _raw(dataschema=..., dataversion=2)
    assert Envelope.from_dict(raw).version == 2
    assert Envelope.from_dict(_raw(dataschema=..., dataversion="3")).version == 3
    # A foreign dataschema (not our URN) is carried but says nothing about the version.
    foreign = Envelope.from_dict(_raw(dataschema="https://example.com/schema.json"))
    assert foreign.version is None


def test_dataschema_for() -> None:
    assert dataschema_for("user.account.created", 2) == (
        "urn:concordia:event:user.account.created:v2")


@pytest.mark.parametrize("attribute", ["id", "source", "type", "specversion", "time"])
def test_missing_required_attribute_is_named(attribute: str) -> None:
    with pytest.raises(EventError, match=f"attribute '{attribute}': required") as info:
        Envelope.from_dict(_raw(**{attribute: ...}))
    assert info.value.field == attribute


@pytest.mark.parametrize(("overrides", "attribute", "fragment"), [
    ({"specversion": "0.3"}, "specversion", "'0.3' is not supported"),
    ({"id": "evt-1"}, "id", "'evt-1' is not a UUID"),
    ({"id": 42}, "id", "42 is not a UUID"),
    ({"source": ""}, "source", "non-empty string"),
    ({"type": ["a"]}, "type", "non-empty string"),
    ({"type": "ml run"}, "type", "not an event type name"),
    ({"time": "yesterday"}, "time", "not an RFC 3339 date-time"),
    ({"time": "2026-11-27T09:30:00"}, "time", "not an RFC 3339 date-time"),
    ({"time": "2026-13-27T09:30:00Z"}, "time", "out of range"),
    ({"datacontenttype": "application/xml"}, "datacontenttype", "must be application/json"),
    ({"data_base64": "AAAA"}, "data_base64", "binary data is not supported"),
    ({"correlationid": 7}, "correlationid", "non-empty string"),
    ({"dataschema": "urn:concordia:event:ml.run.failed:v1"}, "dataschema",
     "names event type 'ml.run.failed'"),
    ({"dataschema": "urn:concordia:event:ml.run.completed:one"}, "dataschema",
     "is not of the form"),
    ({"dataversion": 2}, "dataversion", "dataschema says version 1"),
    ({"dataschema": ..., "dataversion": "v2"}, "dataversion", "not a positive integer"),
    ({"correlation_id": "x"}, "correlation_id", "did you mean 'correlationid'?"),
    ({"Extra": "x"}, "Extra", "lowercase letters and digits"),
    ({"trace": {"a": 1}}, "trace", "not an object"),
    ({"weight": 1.5}, "weight", "not a number"),
])
def test_bad_envelopes_are_refused_naming_the_attribute(
        overrides: dict[str, Any], attribute: str, fragment: str) -> None:
    with pytest.raises(EventError) as info:
        Envelope.from_dict(_raw(**overrides))
    assert info.value.field == attribute
    assert f"attribute {attribute!r}" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("raw", [[], "event", None, 3])
def test_not_an_object(raw: Any) -> None:
    with pytest.raises(EventError, match="must be a JSON object"):
        Envelope.from_dict(raw)


def test_null_optional_attributes_are_absent() -> None:
    event = Envelope.from_dict(_raw(causationid=None, priority=None, datacontenttype=None))
    assert event.causationid is None
    assert "priority" not in event.extensions
    assert event.datacontenttype == "application/json"


def test_json_media_type_variants_are_accepted() -> None:
    for media in ("application/json; charset=utf-8", "application/cloudevents+json"):
        assert Envelope.from_dict(_raw(datacontenttype=media)).datacontenttype == media


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"source": ""}, "source"),
    ({"version": 0}, "positive integer"),
    ({"extensions": {"correlationid": "x"}}, "reserved"),
    ({"extensions": {"Bad_Name": "x"}}, "lowercase"),
])
def test_new_event_refuses_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(EventError, match=fragment):
        _event(**kwargs)


def test_every_bad_attribute_is_named_at_once() -> None:
    from concordia.events.envelope import read_envelope

    raw = {**_raw(), "id": "x", "time": "yesterday", "Bad-Name": 1, "priority": 1.5}
    raw.pop("source")
    envelope, problems = read_envelope(raw)
    assert envelope is None
    assert [p.attribute for p in problems] == ["source", "id", "time", "Bad-Name", "priority"]
    with pytest.raises(EventError) as info:
        Envelope.from_dict(raw)
    assert info.value.field == "source"
    for p in problems:
        assert p.text() in str(info.value)


def test_a_version_beyond_two_to_the_31_is_refused() -> None:
    with pytest.raises(EventError, match="dataschema"):
        Envelope.from_dict(_raw(dataschema="urn:concordia:event:ml.run.completed:v3000000000"))
    assert Envelope.from_dict(
        _raw(dataschema="urn:concordia:event:ml.run.completed:v2147483647")).version == (
        2**31 - 1)
