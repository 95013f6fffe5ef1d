"""The smallest JSON value a schema accepts: what the explorer gives a run as its input, an
awaited event as its data and an emitted event as its payload, none of which it knows.

A path's outcome never depends on these values (the explorer's judge answers every
judgement a value could steer), but the engine checks them where they enter: a run's input
against its saga's ``input_schema``, an event against the taxonomy. So each is built to
pass that check: required fields only, the first ``enum`` value, strings of the declared
format, numbers within their bounds. A schema no value is found for (a ``pattern`` none of
a few candidates matches) gives its best attempt, and the engine's own check then says
what is wrong, as it would for real data.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from concordia.jsonvalidation import check

_FORMATS: dict[str, str] = {
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
}
_PATTERN_CANDIDATES = ("x", "a", "A", "0", "x1", "ABC", "abc", "a-1", "2026-01-01")
_DEPTH = 16  # schemas nested deeper than this get null there


def sample(schema: Mapping[str, Any]) -> Any:
    """A small value ``schema`` accepts (see the module docstring)."""
    return _cached(_freeze(schema))


@lru_cache(maxsize=1024)
def _cached(frozen: Any) -> Any:
    schema = _thaw(frozen)
    value = _value(schema, schema, 0)
    if check(schema, value):  # not accepted: try each alternative the schema offers
        for alternative in _alternatives(schema):
            candidate = _value(alternative, schema, 0)
            if not check(schema, candidate):
                return candidate
    return value


def _value(node: Any, root: Mapping[str, Any], depth: int) -> Any:
    if not isinstance(node, Mapping) or depth > _DEPTH:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return _value(_resolve(root, ref), root, depth + 1)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    for key in ("oneOf", "anyOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            return _value(options[0], root, depth + 1)
    if isinstance(node.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            if isinstance(part, Mapping):
                merged.update(part)
        merged.update({k: v for k, v in node.items() if k != "allOf"})
        return _value(merged, root, depth + 1)
    kind = _kind(node)
    if kind == "string":
        return _string(node)
    if kind in ("integer", "number"):
        return _number(node, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "array":
        items = node.get("items", {})
        return [_value(items, root, depth + 1) for _ in range(int(node.get("minItems", 0)))]
    if kind == "object":
        props = node.get("properties") or {}
        return {name: _value(props.get(name, {}), root, depth + 1)
                for name in node.get("required") or ()}
    return None


def _kind(node: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        kind = real[0] if real else "null"
    if kind is None:
        if "properties" in node or "required" in node:
            return "object"
        if "items" in node:
            return "array"
    return kind if isinstance(kind, str) else None


def _string(node: Mapping[str, Any]) -> str:
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        for candidate in _PATTERN_CANDIDATES:
            if not check({"type": "string", "pattern": pattern}, candidate):
                return candidate
    low = int(node.get("minLength", 1))
    high = node.get("maxLength")
    length = max(low, 1) if high is None else min(max(low, 1), int(high))
    return "x" * length


def _number(node: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    if isinstance(node.get("minimum"), int | float):
        value = max(value, node["minimum"])
    if isinstance(node.get("exclusiveMinimum"), int | float):
        value = max(value, node["exclusiveMinimum"] + 1)
    if isinstance(node.get("maximum"), int | float):
        value = min(value, node["maximum"])
    if isinstance(node.get("exclusiveMaximum"), int | float):
        value = min(value, node["exclusiveMaximum"] - 1)
    return int(value) if integer or float(value).is_integer() else value


def _alternatives(schema: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key in ("oneOf", "anyOf"):
        options = schema.get(key)
        if isinstance(options, list):
            out += options[1:]
    return out


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("[", *(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        if value and value[0] == "[":
            return [_thaw(v) for v in value[1:]]
        return {k: _thaw(v) for k, v in value}
    return value
