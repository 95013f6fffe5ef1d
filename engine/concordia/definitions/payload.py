"""The compact payload notation (``user_id: {type: uuid, required: true}``) → JSON Schema.

A payload schema in a definition is either compact (a mapping of field name to a field
spec) or a full JSON Schema; a top-level ``type`` whose value is a string marks the latter,
since in compact form every value is a mapping.
"""

from __future__ import annotations

from typing import Any

# Compact type name -> JSON Schema fragment.
COMPACT_TYPES: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "format": "uuid"},
    "string": {"type": "string"},
    "binary": {"type": "string"},
    "text": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "float": {"type": "number"},
    "boolean": {"type": "boolean"},
    "email": {"type": "string", "format": "email"},
    "url": {"type": "string", "format": "uri"},
    "map": {"type": "object"},
    "list": {"type": "array"},
    "any": {},
}
_PASSTHROUGH = ("description", "enum", "minimum", "maximum", "pattern", "default",
                "minLength", "maxLength", "minItems", "maxItems")


def is_full_json_schema(schema: dict[str, Any]) -> bool:
    """True when ``schema`` is a full JSON Schema rather than compact notation."""
    return isinstance(schema.get("type"), str) or "$schema" in schema or "$ref" in schema


def to_json_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Compile a payload schema (compact or full) into a JSON Schema object."""
    if schema is None:
        return {"type": "object"}
    if is_full_json_schema(schema):
        return schema
    return _compact_object(schema)


def _compact_object(fields: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in fields.items():
        properties[name] = _compact_field(spec)
        if spec.get("required", False):
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _compact_field(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(COMPACT_TYPES[spec["type"]])
    for key in _PASSTHROUGH:
        if key in spec:
            out[key] = spec[key]
    if "items" in spec:
        items = spec["items"]
        out["items"] = dict(COMPACT_TYPES[items]) if isinstance(items, str) else _compact_field(
            items)
    if "fields" in spec:
        out.update(_compact_object(spec["fields"]))
    if spec.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
    return out
