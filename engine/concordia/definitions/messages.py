"""JSON Schema errors rewritten to say what is wrong and what to write instead.

jsonschema's own messages embed the offending value whole (a 900 KB string makes a
900 KB message) and speak of validators; these name the field as the author wrote it,
quote values cut to a short prefix, and suggest the closest allowed word.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError

from concordia.definitions.problems import pointer_join

QUOTE_LIMIT = 60
# Suggestions compare strings pairwise; names longer than this are no typo of a key.
_SUGGEST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class SchemaFinding:
    """One problem a schema error stands for, located by JSON pointer."""

    code: str
    message: str
    pointer: str
    hint: str | None = None


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (marked with …), for messages.

    Long strings are cut before ``repr`` so that quoting never copies a large value.
    """
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    if isinstance(value, dict | list) and len(value) > limit:
        return f"<{_type_name(value)} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def cut(text: str, limit: int = 4 * QUOTE_LIMIT) -> str:
    """Plain text cut to ``limit`` characters (marked with …)."""
    return text if len(text) <= limit else text[:limit] + "…"


def suggest(name: str, options: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest option, or None."""
    if len(name) > _SUGGEST_LIMIT:  # no typo of a name; and comparing long strings is slow
        return None
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def describe(err: ValidationError) -> list[SchemaFinding]:
    """The findings one schema error stands for (an unknown-keys error names each key)."""
    pointer = pointer_join("", *err.absolute_path)
    where = field_name(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())  # type: ignore[union-attr]
        extras = [k for k in err.instance if k not in allowed] if isinstance(
            err.instance, dict) else []
        out = []
        for key in extras:
            hint = suggest(key, allowed) or (
                f"allowed keys: {', '.join(allowed)}" if allowed else None)
            out.append(SchemaFinding("unknown-key", f"unknown key {quote(key)} in {where}",
                                     pointer_join(pointer, key), hint))
        return out
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict)  # type: ignore[union-attr]
                   and k not in err.instance]
        return [SchemaFinding("missing-key", f"{where} is missing required key {key!r}", pointer)
                for key in missing]
    if v == "oneOf" and list(err.absolute_path)[:1] == ["steps"] and len(
            err.absolute_path) == 2:
        if not isinstance(err.instance, dict):
            return []  # reported as a wrong type; no kind of step can be told apart
        name = err.instance.get("name", f"#{int(err.absolute_path[1]) + 1}")
        kinds = [k for k in ("action", "await", "policy", "saga") if k in err.instance]
        msg = (f"step {quote(name)} has {' and '.join(kinds)}; a step is exactly "
               "one of action, await, policy or saga") if kinds else (
            f"step {quote(name)} needs one of action, await, policy or saga")
        return [SchemaFinding("bad-step-kind", msg, pointer)]
    if v == "type":
        return [SchemaFinding("wrong-type", f"{where} must be {_expected(err.validator_value)}, "
                              f"not {_type_name(err.instance)}", pointer)]
    if v in ("enum", "const"):
        options = err.validator_value if v == "enum" else [err.validator_value]
        hint = suggest(str(err.instance), [str(o) for o in options])  # type: ignore[union-attr]
        return [SchemaFinding("bad-value", f"{where} is {quote(err.instance)}; expected one of "
                              f"{', '.join(repr(o) for o in options)}", pointer, hint)]  # type: ignore[union-attr]
    if v == "pattern" and "propertyNames" in err.schema_path:
        # jsonschema reports a bad key at its parent mapping; point at the key itself.
        return [SchemaFinding("bad-name", f"key {quote(err.instance)} in {where} must be an "
                              "identifier (letters, digits and _, not starting with a digit)",
                              pointer_join(pointer, str(err.instance)))]
    if v == "pattern":
        return [SchemaFinding("bad-name", f"{where} {quote(err.instance)} does not match "
                              f"{_pattern_words(err.validator_value)}", pointer)]
    if v == "oneOf" and err.schema.get("description", "").startswith("A duration"):  # type: ignore[union-attr]
        return [SchemaFinding("bad-duration", f"{where} {quote(err.instance)} is not a duration",
                              pointer, "write e.g. 250ms, 30s, 5m, 2h, 1d or a number of "
                                       "seconds")]
    return [SchemaFinding("schema", f"{where}: {_cut_message(err)}", pointer)]


def field_name(path: Any) -> str:
    parts = [str(p) for p in path]
    return "`" + ".".join(parts) + "`" if parts else "the document"


def _cut_message(err: ValidationError) -> str:
    # jsonschema's message starts with the value's repr for most validators.
    full = repr(err.instance)
    if err.message.startswith(full) and len(full) > QUOTE_LIMIT:
        return quote(err.instance) + err.message[len(full):]
    return cut(err.message)


def _expected(value: Any) -> str:
    names: dict[str, str] = {"object": "a mapping", "array": "a list", "string": "a string",
                             "integer": "an integer", "number": "a number",
                             "boolean": "true or false"}
    if isinstance(value, list):
        return " or ".join(names.get(str(v), str(v)) for v in value)
    return names.get(value, str(value))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


type_name = _type_name


def _pattern_words(pattern: Any) -> str:
    if pattern == r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,}$":
        return "domain.entity.action (lowercase, at least three dot-separated segments)"
    if pattern == r"^[a-z][a-z0-9_]*$":
        return "a lowercase identifier (a-z, 0-9, _)"
    if pattern == r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$":
        return "a handler name (lowercase identifiers joined by dots, e.g. billing.charge)"
    if str(pattern).startswith(r"^(\d+"):
        return "a duration such as 250ms, 30s, 5m, 2h or 1d"
    return f"the pattern {pattern}"
