"""Strict JSON: the one parser for JSON that comes from outside (a request's body, a file
handed to the command line), with the rules safe YAML loading has.

``json.loads`` keeps the last of two equal keys without a word, reads ``NaN`` and
``Infinity``, and turns ``1e400`` into infinity and a 5,000-digit integer into a
``ValueError`` from deep inside. :func:`load_json` refuses each of these with a message
that says what and where (line and column for syntax), so the API and ``concordia``
give the same verdict on the same bytes:

- a duplicate key in any object (``{"type": "a", "type": "b"}`` is two events in one);
- ``NaN``, ``Infinity`` and ``-Infinity``, and numbers too large for a double;
- integers beyond what a JSON consumer reading numbers as doubles keeps exactly
  (±(2**53 - 1), as :mod:`concordia.definitions.yamlsafe` refuses them in YAML);
- text that is not UTF-8 (a leading byte order mark is ignored, as RFC 8259 allows);
- nesting so deep that the parser runs out of stack.
"""

from __future__ import annotations

import json
from typing import Any

from concordia.definitions.yamlsafe import MAX_SAFE_INTEGER
from concordia.errors import ConcordiaError

# Digits above which an integer is refused before it is converted (Python refuses more
# than 4,300 with an exception, and nothing near that size is safe anyway).
_MAX_INT_TEXT = 24


class JsonLoadError(ConcordiaError):
    """Bytes that are not one strict JSON document; ``line`` and ``column`` (1-based,
    0 when the fault has no one place) say where."""

    def __init__(self, reason: str, line: int = 0, column: int = 0) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{reason}{where}")


def load_json(raw: bytes | str) -> Any:
    """The JSON document ``raw`` holds, under the rules of the module docstring."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonLoadError(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = raw.removeprefix("\ufeff")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant, parse_int=_safe_int,
                          parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise JsonLoadError(exc.msg, exc.lineno, exc.colno) from None
    except _Refused as exc:
        raise JsonLoadError(str(exc)) from None
    except RecursionError:
        raise JsonLoadError("nested too deeply") from None


class _Refused(ValueError):
    """A value the rules refuse, raised from inside the parser's hooks."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key[:60]!r} (an object names each key once)")
        out[key] = value
    return out


def _no_constant(token: str) -> Any:
    raise _Refused(f"{token} is not JSON")


def _safe_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    value = int(text) if digits <= _MAX_INT_TEXT else None
    if value is None or abs(value) > MAX_SAFE_INTEGER:
        shown = text if digits <= _MAX_INT_TEXT else f"an integer of {digits} digits"
        raise _Refused(f"{shown} is beyond what JSON consumers read exactly "
                       f"(±{MAX_SAFE_INTEGER:,}); send it as a string")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"{text[:40]} is too large for a number")
    return value
