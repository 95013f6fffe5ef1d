"""JSON Schema checks for event payloads and policy inputs: strict formats, named fields.

jsonschema only enforces ``date-time`` and ``uri`` when optional packages are installed,
and silently passes them otherwise; a payload schema that says ``format: date-time``
must not accept ``"yesterday"``. So the checker here is built explicitly: jsonschema's
dependency-free checkers plus our own ``date-time`` (RFC 3339) and ``uri``. Every error
is turned into ``(field, message)`` with the field as a dotted path
(``candidates[0].score``), so callers can say which field is wrong without parsing
jsonschema's prose.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import SchemaError

from concordia.ids import is_uuid
from concordia.timestamps import is_timestamp

MAX_REPORTED = 20
_REPR_LIMIT = 60
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _build_format_checker() -> FormatChecker:
    checker = FormatChecker(["date", "ipv4", "ipv6", "regex"])

    @checker.checks("date-time")
    def _date_time(instance: object) -> bool:
        return not isinstance(instance, str) or is_timestamp(instance)

    @checker.checks("uuid")
    def _uuid(instance: object) -> bool:
        # Canonical hyphenated form only: `{...}` and `urn:uuid:` spellings that Python's
        # UUID() accepts would not compare equal as strings downstream.
        return not isinstance(instance, str) or is_uuid(instance)

    @checker.checks("email")
    def _email(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        local, at, domain = instance.rpartition("@")
        return bool(at and local and domain) and not any(c.isspace() for c in instance)

    @checker.checks("uri")
    def _uri(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        scheme, colon, rest = instance.partition(":")
        return (bool(colon and rest) and _SCHEME_RE.fullmatch(scheme) is not None
                and not any(c.isspace() for c in instance))

    return checker


FORMAT_CHECKER = _build_format_checker()


@dataclass(frozen=True, slots=True)
class FieldError:
    """One schema violation: the field's dotted path ("" for the whole value) and why."""

    field: str
    message: str

    def format(self, what: str = "field") -> str:
        return f"{what} {self.field!r}: {self.message}" if self.field else self.message


class _ValidatorCache:
    """Compiled validators keyed by the identity of the schema dict they were built from.

    Definitions are frozen models, so one schema dict is one (type, version) of one
    catalog. Keeping the dict in the entry pins its id, so a recycled id can never hit a
    stale validator; the bound keeps reloaded catalogs from piling up.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[int, tuple[Mapping[str, Any], Draft202012Validator]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def get(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        key = id(schema)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is schema:
                self._entries.move_to_end(key)
                return entry[1]
        Draft202012Validator.check_schema(schema)
        built = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
        with self._lock:
            self._entries[key] = (schema, built)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return built


_cache = _ValidatorCache()


def validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    """The compiled (cached) validator of ``schema``; raises SchemaError if it is invalid."""
    return _cache.get(schema)


def check(schema: Mapping[str, Any], instance: Any) -> list[FieldError]:
    """Every violation of ``schema`` by ``instance``, in a stable order (empty if valid)."""
    errors = sorted(validator_for(schema).iter_errors(instance), key=_order)
    out: list[FieldError] = []
    for error in errors:
        out.extend(_describe(error))
    return out


def summarise(errors: Iterable[FieldError], what: str = "field") -> str:
    """All errors on one line, capped at :data:`MAX_REPORTED`."""
    items = list(errors)
    text = "; ".join(e.format(what) for e in items[:MAX_REPORTED])
    if len(items) > MAX_REPORTED:
        text += f"; ... and {len(items) - MAX_REPORTED} more"
    return text


def dotted(path: Iterable[str | int]) -> str:
    """``["a", 0, "b"]`` → ``a[0].b``; keys that are not identifiers are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT_RE.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _order(error: ValidationError) -> tuple[str, str]:
    return (dotted(error.absolute_path), str(error.validator))


def _describe(error: ValidationError) -> list[FieldError]:
    path = list(error.absolute_path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    expected: Any = error.validator_value
    if kind == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [name for name in expected if name not in present]
        return [FieldError(dotted([*path, name]), "required field is missing")
                for name in missing]
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        out = []
        for name in error.instance:
            if name in known or any(re.search(p, name) for p in patterns):
                continue
            message = "unknown field; the schema allows no other fields"
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            elif known:
                message += f" (known: {', '.join(sorted(known))})"
            out.append(FieldError(dotted([*path, name]), message))
        return out
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        return [FieldError(dotted(path), f"{short_repr(error.instance)} is not of type "
                                         + " or ".join(repr(n) for n in names))]
    if kind == "format":
        return [FieldError(dotted(path),
                           f"{short_repr(error.instance)} is not a {expected!r}")]
    if kind == "enum":
        allowed = ", ".join(short_repr(v) for v in expected)
        return [FieldError(dotted(path),
                           f"{short_repr(error.instance)} is not one of {allowed}")]
    # jsonschema's own wording for the rest (minimum, pattern, maxItems, ...) is clear, but
    # it embeds the full value; rebuild it around a short one where it starts with it.
    message = error.message
    full = repr(error.instance)
    if message.startswith(full) and len(full) > _REPR_LIMIT:
        message = short_repr(error.instance) + message[len(full):]
    return [FieldError(dotted(path), message)]


__all__ = [
    "FORMAT_CHECKER",
    "MAX_REPORTED",
    "FieldError",
    "SchemaError",
    "check",
    "dotted",
    "short_repr",
    "summarise",
    "validator_for",
]
