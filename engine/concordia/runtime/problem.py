"""An exception as structured data the journal keeps: ``{type, title, status, message,
details}``, after RFC 9457 ("problem details"), with ``message`` for its ``detail`` so
that ``details`` can hold the structured part.

Where each part comes from:

- an exception with a ``to_problem()`` method: what it returns (a mapping; ``detail`` is
  read as ``message``, keys other than the five go into ``details``);
- a :class:`~concordia.errors.HandlerError` (``PermanentError``, ``RetryableError``):
  its ``type``, ``title``, ``status`` and ``details``;
- any exception with a ``details`` attribute that is a mapping: those details;
- otherwise: ``type`` and ``title`` are the class name, ``status`` is null.

Every part is bounded like any journaled value: text is cut, ``status`` must be an HTTP-like
code (100-599), and ``details`` must be JSON data within the value limits and at most
``MAX_DETAILS_BYTES``; details that are not are replaced by a note saying why, so a
handler's odd error never costs the journal its record of the failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from concordia.errors import HandlerError, ValueLimitError
from concordia.runtime.pending import describe, detach
from concordia.values import check_value, clean_text, get_limits

MAX_DETAILS_BYTES = 64 * 1024  # structured details are a record of the failure, not data
MAX_NAME = 256  # characters of a type or title
_FIELDS = ("type", "title", "status", "message", "detail", "details")


def problem_of(error: BaseException) -> dict[str, Any]:
    """``error`` as problem details (see the module docstring); never raises."""
    name = type(error).__name__
    text = describe(error)
    message = text[len(name) + 2:] if text.startswith(f"{name}: ") else ""
    problem: dict[str, Any] = {"type": name, "title": name, "status": None,
                               "message": message, "details": None}
    raw = _own_problem(error)
    if raw is not None:
        problem.update(_text_field(raw, "type"), **_text_field(raw, "title"))
        problem["status"] = _status(raw.get("status"))
        if isinstance(raw.get("detail", raw.get("message")), str):
            problem["message"] = _cut(raw.get("detail", raw.get("message")), 16_384)
        extra = {k: v for k, v in raw.items() if k not in _FIELDS}
        details = raw.get("details")
        if isinstance(details, Mapping) or extra:
            problem["details"] = _bounded({**extra, **(details or {})})
        return problem
    if isinstance(error, HandlerError):
        for key in ("type", "title"):
            value = getattr(error, key, None)
            if isinstance(value, str) and value:
                problem[key] = _cut(value, MAX_NAME)
        problem["status"] = _status(getattr(error, "status", None))
    details = _attribute(error, "details")
    if isinstance(details, Mapping):
        problem["details"] = _bounded(details)
    return problem


def _own_problem(error: BaseException) -> Mapping[str, Any] | None:
    """What ``error.to_problem()`` returns, if it is a mapping (a failing one is ignored)."""
    method = _attribute(error, "to_problem")
    if not callable(method):
        return None
    try:
        raw = method()
    except Exception:
        return None
    return raw if isinstance(raw, Mapping) else None


def _attribute(error: BaseException, name: str) -> Any:
    try:
        return getattr(error, name, None)
    except Exception:  # a property of the handler's own that raises
        return None


def _text_field(raw: Mapping[str, Any], key: str) -> dict[str, str]:
    value = raw.get(key)
    return {key: _cut(value, MAX_NAME)} if isinstance(value, str) and value else {}


def _status(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def _cut(text: str, limit: int) -> str:
    return clean_text(text if len(text) <= limit else text[:limit] + "…")


def _bounded(details: Mapping[str, Any]) -> dict[str, Any]:
    limits = get_limits()
    limits = replace(limits, max_bytes=min(limits.max_bytes, MAX_DETAILS_BYTES))
    value = {str(k): v for k, v in details.items()}
    try:
        check_value(value, "the error's details", limits)
    except ValueLimitError as exc:
        return {"unavailable": f"the details were not kept: {exc.reason} at "
                               f"{exc.path or 'the top level'}"}
    except Exception as exc:  # e.g. a mapping whose items() raises
        return {"unavailable": f"the details were not kept: {type(exc).__name__}"}
    result: dict[str, Any] = detach(value)
    return result
