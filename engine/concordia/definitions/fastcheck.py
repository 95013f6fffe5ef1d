"""A compiled yes/no check of a document against a shipped JSON Schema: the fast path.

jsonschema interprets a schema keyword by keyword for every value, which made it the
slowest part of validating a tree (about 2 ms for a ten-step saga). Nearly every file CI
sees is valid, so :func:`fast_check` first runs a check compiled once into plain Python
closures; only a document it does not accept goes through jsonschema, which produces the
located messages. The check is conservative by construction: it answers True only when
the document certainly satisfies the schema. A keyword it does not implement makes
:func:`compile_schema` raise :class:`Unsupported`, and then every document takes the
jsonschema path — slower, never wrong.

Semantics follow jsonschema's Draft 2020-12 validator for the keywords used by the shipped
schemas: a keyword about strings, numbers, arrays or objects ignores values of other types;
booleans are not numbers; ``1.0`` is an integer; ``pattern`` uses ``re.search``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from concordia.definitions.schema import Kind, schema_document

Check = Callable[[Any], bool]

# Keywords that never affect validity.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description",
                          "default", "examples", "deprecated"})


class Unsupported(Exception):
    """The schema uses a keyword (or form) this compiler does not implement."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> bool:
        # A plain loop: all() over a generator costs a frame per value on the hot path.
        for one in checks:  # noqa: SIM110
            if not one(value):
                return False
        return True

    return check


@cache
def fast_check(kind: Kind) -> Check | None:
    """The compiled check of ``kind``'s schema, or None if it cannot be compiled."""
    try:
        return compile_schema(schema_document(kind))
    except Unsupported:
        return None


def compile_schema(root: dict[str, Any]) -> Check:
    """Compile ``root`` (with its local ``$ref``\\ s) into a yes/no check."""
    compiled: dict[str, Check] = {}

    def ref(pointer: str) -> Check:
        if pointer not in compiled:
            # Recursive schemas (a field spec holding field specs) refer back to themselves:
            # register an indirection first, fill it once the target is built.
            cell: list[Check] = []
            compiled[pointer] = lambda value: cell[0](value)
            cell.append(build(_resolve(root, pointer)))
        return compiled[pointer]

    def build(schema: Any) -> Check:
        if schema is True or schema == {}:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(ref(schema["$ref"]))
        if "type" in schema:
            checks.append(_type(schema["type"]))
        if "enum" in schema or "const" in schema:
            checks.append(_enum(schema["enum"] if "enum" in schema else [schema["const"]]))
        if _STRING & schema.keys():
            checks.append(_string(schema))
        if _NUMBER & schema.keys():
            checks.append(_number(schema))
        if _ARRAY & schema.keys():
            checks.append(_array(schema, build))
        if _OBJECT & schema.keys():
            checks.append(_object(schema, build))
        if "oneOf" in schema:
            checks.append(_one_of([build(s) for s in schema["oneOf"]]))
        if "if" in schema:
            checks.append(_if(build(schema["if"]), build(schema.get("then", True)),
                              build(schema.get("else", True))))
        return _all(checks)

    return build(root)


_STRING = frozenset({"pattern", "minLength", "maxLength"})
_NUMBER = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_ARRAY = frozenset({"items", "minItems", "maxItems", "uniqueItems"})
_OBJECT = frozenset({"properties", "additionalProperties", "required", "propertyNames"})
_KEYWORDS = (_STRING | _NUMBER | _ARRAY | _OBJECT
             | {"$ref", "type", "enum", "const", "oneOf", "if", "then", "else"})


def _resolve(root: dict[str, Any], pointer: str) -> Any:
    if not pointer.startswith("#"):
        raise Unsupported(f"non-local $ref {pointer!r}")
    node: Any = root
    for part in pointer[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Unsupported(f"unresolvable $ref {pointer!r}")
        node = node[part]
    return node


def _type(names: Any) -> Check:
    if isinstance(names, str):
        names = [names]
    try:
        checks = [_TYPES[n] for n in names]
    except (KeyError, TypeError):
        raise Unsupported(f"type {names!r}") from None
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(c(v) for c in checks)


def _enum(options: list[Any]) -> Check:
    # jsonschema's equality tells 1 from True and equates 1 with 1.0; with string options
    # only (all the shipped schemas have) plain membership of a string is the same thing.
    if not all(isinstance(o, str) for o in options):
        raise Unsupported("enum or const with a value that is not a string")
    allowed = frozenset(options)
    return lambda v: isinstance(v, str) and v in allowed


def _string(schema: dict[str, Any]) -> Check:
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if len(value) < low or (high is not None and len(value) > high):
            return False
        return pattern is None or pattern.search(value) is not None

    return check


def _number(schema: dict[str, Any]) -> Check:
    minimum = schema.get("minimum")
    maximum = schema.get("maximum")
    exclusive_min = schema.get("exclusiveMinimum")
    exclusive_max = schema.get("exclusiveMaximum")

    def check(value: Any) -> bool:
        if not _is_number(value):
            return True
        # Written as jsonschema's failure conditions so that NaN behaves the same.
        return not ((minimum is not None and value < minimum)
                    or (maximum is not None and value > maximum)
                    or (exclusive_min is not None and value <= exclusive_min)
                    or (exclusive_max is not None and value >= exclusive_max))

    return check


def _array(schema: dict[str, Any], build: Callable[[Any], Check]) -> Check:
    item = build(schema["items"]) if "items" in schema else None
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    unique = bool(schema.get("uniqueItems", False))

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if len(value) < low or (high is not None and len(value) > high):
            return False
        if item is not None:
            for element in value:
                if not item(element):
                    return False
        if unique:
            # Only strings are compared here; anything else goes to jsonschema's rules.
            if not all(isinstance(e, str) for e in value):
                return False
            if len(set(value)) != len(value):
                return False
        return True

    return check


def _object(schema: dict[str, Any], build: Callable[[Any], Check]) -> Check:
    properties = {k: build(v) for k, v in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    additional = None if extra is True else build(extra)
    required = tuple(schema.get("required", ()))
    names = build(schema["propertyNames"]) if "propertyNames" in schema else None

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key in required:
            if key not in value:
                return False
        for key, item in value.items():
            known = properties.get(key)
            if known is not None:
                if not known(item):
                    return False
            elif additional is not None and not additional(item):
                return False
            if names is not None and not names(key):
                return False
        return True

    return check


def _one_of(options: list[Check]) -> Check:
    def check(value: Any) -> bool:
        matched = 0
        for option in options:
            if option(value):
                matched += 1
                if matched > 1:
                    return False
        return matched == 1

    return check


def _if(condition: Check, then: Check, otherwise: Check) -> Check:
    return lambda v: then(v) if condition(v) else otherwise(v)
