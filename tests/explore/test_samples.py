"""The least value a schema accepts, for every kind of schema the definitions write."""

from __future__ import annotations

from typing import Any

import pytest

from concordia.definitions.payload import to_json_schema
from concordia.explore.samples import sample
from concordia.jsonvalidation import check

COMPACT: list[dict[str, Any]] = [
    {},
    {"id": {"type": "uuid", "required": True}},
    {"email": {"type": "email", "required": True}, "site": {"type": "url", "required": True}},
    {"at": {"type": "datetime", "required": True}, "on": {"type": "date", "required": True}},
    {"n": {"type": "integer", "required": True, "minimum": 5, "maximum": 9}},
    {"x": {"type": "number", "required": True, "minimum": 0.5}},
    {"flag": {"type": "boolean", "required": True}},
    {"kind": {"type": "string", "required": True, "enum": ["b", "a"]}},
    {"code": {"type": "string", "required": True, "pattern": "^[A-Z]{3}$"}},
    {"name": {"type": "string", "required": True, "minLength": 4, "maxLength": 6}},
    {"tags": {"type": "list", "items": "string", "required": True, "minItems": 2}},
    {"maybe": {"type": "string", "nullable": True, "required": True}},
    {"inner": {"type": "map", "required": True,
               "fields": {"a": {"type": "integer", "required": True}}}},
    {"optional": {"type": "string"}},
]


@pytest.mark.parametrize("compact", COMPACT)
def test_a_sample_of_a_compact_schema_is_valid(compact: dict[str, Any]) -> None:
    schema = to_json_schema(compact)
    value = sample(schema)
    assert check(schema, value) == [], value


@pytest.mark.parametrize("schema", [
    {"type": "object", "required": ["a"], "properties": {"a": {"$ref": "#/$defs/a"}},
     "$defs": {"a": {"type": "integer", "exclusiveMinimum": 3}}},
    {"oneOf": [{"type": "string", "maxLength": 0}, {"type": "integer"}]},
    {"allOf": [{"type": "object", "required": ["x"]},
               {"properties": {"x": {"const": 7}}}]},
])
def test_a_sample_of_a_full_schema_is_valid(schema: dict[str, Any]) -> None:
    assert check(schema, sample(schema)) == []


def test_required_fields_only() -> None:
    assert sample(to_json_schema({"a": {"type": "string", "required": True},
                                  "b": {"type": "string"}})) == {"a": "x"}
