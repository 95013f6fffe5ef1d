"""What a journaled or evaluated value may be: JSON data within fixed bounds.

Every value that crosses into the journal (a run's input, a handler's result, a
checkpoint, an event's data) and every value an expression produces is bounded here, so
that nothing downstream (the JSON encoder, the store, the CEL library, a reader of the
journal) meets a value it cannot handle: the encoder recurses and the CEL library
converts values recursively on the native stack, where a 10,000-deep value crashes the
process instead of raising.

The walks below are iterative on purpose (an explicit stack of iterators, never
recursion), so a value a million levels deep is refused as cheaply as a shallow one, and
they stop at the first limit crossed.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from concordia.errors import ValueLimitError

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on values and on expression evaluation, in one place.

    Values (checked by :func:`check_value`):

    - ``max_depth`` = 64 nested lists/objects. Real payloads nest a handful of levels;
      64 leaves ample room while staying far below what the CEL library converts safely
      on a small thread stack (it survives ~300 levels on a 512 KiB stack and crashes at
      ~10,000 on the main thread's 8 MiB).
    - ``max_bytes`` = 1 MiB per value, counted as compact UTF-8 JSON would take it
      (string content without escapes, plus punctuation). A journal row is read back on
      every step of its run; a blob belongs in object storage, its reference in the
      journal.
    - ``max_string_length`` = 256 Ki characters for one string or object key.
    - Integers within signed 64 bits, what CEL's ``int`` holds (beyond it CEL raises and
      SQL/JSON readers in other languages lose precision). Floats finite: NaN compares
      false with everything, so ``x > 0.3`` would let a NaN through, and JSON has no
      spelling for NaN or infinity. Object keys are strings. Only dict, list (a tuple
      counts as a list, as the JSON encoder writes it), str, int, float, bool and None.

    Expressions (see :mod:`concordia.definitions.expressions`):

    - ``max_expression_length`` = 4096 characters of CEL source: a condition or a
      mapping, not a program. It also keeps operator chains (``a + b + ...``, which the
      library parses and evaluates by recursion on the native stack) far from the depth
      where they crash it.
    - ``max_context_depth`` = 72: the value depth plus room for the scope's own
      wrapping (``results`` → step → value, ``event`` → ``data`` → value).
    - ``max_output_bytes`` = 1 MiB: the largest result an expression may produce.
    - ``expression_time`` = 1 s of wall-clock time for an evaluation that may be
      expensive (comprehensions, long chains), run in a sandbox process that is killed
      when the budget runs out; ``expression_memory`` = 512 MiB of address space that
      process may use beyond its own start-up footprint; ``sandbox_processes`` = 2
      processes at most, each serving one evaluation at a time.
    """

    max_depth: int = 64
    max_bytes: int = 1 << 20
    max_string_length: int = 256 * 1024
    max_expression_length: int = 4096
    max_context_depth: int = 72
    max_output_bytes: int = 1 << 20
    expression_time: float = 1.0
    expression_memory: int = 512 << 20
    sandbox_processes: int = 2

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_bytes", "max_string_length", "max_expression_length",
                     "max_context_depth", "max_output_bytes", "expression_memory",
                     "sandbox_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1")
        if not self.expression_time > 0:
            raise ValueError("Limits.expression_time must be positive")


DEFAULT_LIMITS = Limits()

_lock = threading.Lock()
_current = DEFAULT_LIMITS


def get_limits() -> Limits:
    """The limits in force (the defaults unless :func:`set_limits` changed them)."""
    return _current


def set_limits(limits: Limits | None = None, **changes: Any) -> Limits:
    """Put ``limits`` (or the current limits with ``changes``) in force; returns them.

    Takes effect for evaluations that start afterwards; sandbox processes started under
    other budgets are replaced as they come free. ``set_limits(DEFAULT_LIMITS)`` restores
    the defaults.
    """
    global _current
    with _lock:
        _current = replace(limits or _current, **changes)
        return _current


def check_value(value: Any, what: str, limits: Limits | None = None) -> None:
    """Raise :class:`ValueLimitError` unless ``value`` is JSON data within ``limits``.

    ``what`` names the value for the message (``"step charge result"``); ``limits``
    defaults to the limits in force (:func:`get_limits`). Measured on
    the project's 2-core machine (2026-11-29): ~3 µs for an object of 10 scalar fields,
    ~13 µs for an input of 10 fields beside three step results of 5 fields each, ~0.3 µs
    for a scalar, ~50 µs to refuse a list nested a million deep.
    """
    if limits is None:
        limits = _current
    if _flat_within(value, limits):
        return
    _walk(value, what, limits.max_depth, limits.max_bytes, limits.max_string_length,
          strict=True)


_INFINITIES = (float("inf"), float("-inf"))


def _flat_within(value: Any, limits: Limits) -> bool:
    """The common case, decided in one pass: a scalar, or an object of up to 32 scalar
    fields, all within bounds. Anything else (or anything doubtful) takes the full walk,
    which also names what is wrong and where."""
    kind = type(value)
    if kind is dict:
        if len(value) > 32:
            return False
        size = 2
        max_len = limits.max_string_length
        for key, item in value.items():
            if (type(key) is not str or not key.isascii() or len(key) > max_len
                    or "\x00" in key):
                return False
            field = _scalar_size(item, max_len)
            if field < 0:
                return False
            size += len(key) + field + 4
        return size <= limits.max_bytes
    field = _scalar_size(value, limits.max_string_length)
    return 0 <= field <= limits.max_bytes


def _scalar_size(value: Any, max_len: int) -> int:
    """A plain scalar's JSON size as the full walk counts it, or -1 for anything else
    (non-ASCII text is left to the walk, which knows its UTF-8 size and lone surrogates)."""
    kind = type(value)
    if kind is str:
        return (len(value) + 2 if len(value) <= max_len and value.isascii()
                and "\x00" not in value else -1)
    if kind is int:
        return 20 if _INT_MIN <= value <= _INT_MAX else -1
    if kind is bool or value is None:
        return 5
    if kind is float:
        return 25 if value == value and value not in _INFINITIES else -1
    return -1


def check_size(value: Any, what: str, limits: Limits | None = None,
               max_bytes: int | None = None) -> None:
    """Raise :class:`ValueLimitError` if ``value`` is too deep or too large, whatever its types.

    For values that are not journaled as such (an expression's result may be a
    timestamp, a duration or bytes): only depth, string length and size are bounded;
    ``max_bytes`` overrides ``limits.max_bytes``.
    """
    if limits is None:
        limits = _current
    _walk(value, what, limits.max_depth, limits.max_bytes if max_bytes is None else max_bytes,
          limits.max_string_length, strict=False)


def check_result(value: Any, limits: Limits) -> None:
    """Raise :class:`ValueLimitError` if an expression's result is too large or too deep.

    Bounded by ``max_output_bytes`` and ``max_context_depth`` (a result may hand back
    any part of its context); its types are not checked, see :func:`check_size`.
    """
    kind = type(value)
    if kind is bool or kind is int or kind is float or value is None:
        return  # the common results (conditions, counts), which no limit can concern
    _walk(value, "expression result", limits.max_context_depth, limits.max_output_bytes,
          limits.max_string_length, strict=False)


def _walk(value: Any, what: str, max_depth: int, max_bytes: int, max_len: int, *,
          strict: bool) -> None:
    # The path to the current value: one key or index per open container (_OPENED until
    # its first entry is visited), turned into a pointer only on failure.
    path: list[Any] = []
    size = _leaf(value, what, max_len, strict, path)
    if size >= 0:
        if size > max_bytes:
            _fail(what, f"larger than {_bytes(max_bytes)} as JSON", path)
        return
    # One iterator per open container: (key, value) pairs for an object, (index, value)
    # for a list. A container found inside suspends the loop over its parent, which
    # resumes where it stopped once the container is done.
    frames: list[tuple[Iterator[tuple[Any, Any]], bool]] = []
    size = _open(value, frames, path)
    if size > max_bytes:
        _fail(what, f"larger than {_bytes(max_bytes)} as JSON", path)
    while frames:
        entries, mapping = frames[-1]
        for key, item in entries:
            if mapping:
                if type(key) is not str:
                    key = _key(key, what, strict, path)
                path[-1] = key
                if key.isascii() and len(key) <= max_len and "\x00" not in key:
                    size += len(key) + 2  # its quotes; the colon is counted by _open
                else:
                    size += _text_size(key, max_len, what, path) + 2
            else:
                path[-1] = key
            step = _leaf(item, what, max_len, strict, path)
            if step < 0:
                if len(frames) >= max_depth:
                    _fail(what, f"nested deeper than {max_depth} levels", path)
                size += _open(item, frames, path)
                if size > max_bytes:
                    _fail(what, f"larger than {_bytes(max_bytes)} as JSON", path)
                break
            size += step
            if size > max_bytes:
                _fail(what, f"larger than {_bytes(max_bytes)} as JSON", path)
        else:
            frames.pop()
            path.pop()


_OPENED: Any = object()


def _leaf(value: Any, what: str, max_len: int, strict: bool, path: list[Any]) -> int:
    """JSON size of a scalar, -1 for a container; raises if the value is not allowed."""
    kind = type(value)
    if kind is str:
        # The common case inlined: short ASCII without NUL needs no further check.
        if value.isascii() and len(value) <= max_len and "\x00" not in value:
            return len(value) + 2
        return _text_size(value, max_len, what, path) + 2
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return len(repr(value))
        return _big_int(value, what, strict, path)
    if kind is bool:
        return 4 if value else 5
    if kind is float:
        if strict and not math.isfinite(value):
            _fail(what, f"{value!r} is not a finite number", path)
        return len(repr(value))
    if value is None:
        return 4
    if kind is dict or kind is list:
        return -1
    return _other(value, what, max_len, strict, path)


def _other(value: Any, what: str, max_len: int, strict: bool, path: list[Any]) -> int:
    """:func:`_leaf` for values of no exact JSON type: subclasses, and leniently anything."""
    if isinstance(value, bool):
        return 4 if value else 5
    if isinstance(value, str):
        return _text_size(value, max_len, what, path) + 2
    if isinstance(value, int | float):
        # An IntEnum or a float subclass: checked and measured as the plain number.
        plain = int(value) if isinstance(value, int) else float(value)
        return _leaf(plain, what, max_len, strict, path)
    if isinstance(value, dict | list | tuple):
        return -1
    if strict:
        _fail(what, f"{type(value).__name__} is not JSON data (expected an object, list, "
                    "string, number, boolean or null)", path)
    if isinstance(value, bytes | bytearray):
        if len(value) > max_len:
            _fail(what, f"bytes of length {len(value)} exceed {max_len}",
                  path)
        return len(value) + 2
    return 32  # a timestamp, a duration, an optional: small and fixed


def _big_int(value: int, what: str, strict: bool, path: list[Any]) -> int:
    if strict:
        # repr() of a huge int is slow, and refused beyond 4300 digits: name its size.
        shown = repr(value) if value.bit_length() < 128 else f"of {value.bit_length()} bits"
        _fail(what, f"integer {shown} is outside the signed 64-bit range", path)
    return value.bit_length() * 30103 // 100000 + 2  # its decimal digits, and a sign


def _open(container: Any, frames: list[tuple[Iterator[tuple[Any, Any]], bool]],
          path: list[Any]) -> int:
    """Push ``container``'s entries; returns its brackets, commas and colons."""
    mapping = isinstance(container, dict)
    frames.append((iter(container.items()) if mapping else enumerate(container), mapping))
    path.append(_OPENED)
    n = len(container)
    return 2 + max(n - 1, 0) + (n if mapping else 0)


def _key(key: Any, what: str, strict: bool, path: list[Any]) -> str:
    """A non-string key: refused, or (lenient) measured as its text."""
    if strict or not isinstance(key, str | int | float | bool):
        path[-1] = _OPENED  # the position to report is the object holding the key
        _fail(what, f"key {_short(repr(key))} ({type(key).__name__}) is not a string", path)
    return str(key)


def _text_size(text: str, max_len: int, what: str, path: list[Any]) -> int:
    if len(text) > max_len:
        _fail(what, f"string of {len(text)} characters exceeds {max_len}", path)
    reason = text_fault(text)
    if reason is not None:
        _fail(what, reason, path)
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# -- text: the one rule for every journaled string ------------------------------------------
#
# A journaled string is Unicode text without U+0000 and without lone surrogates. PostgreSQL
# refuses NUL in ``text`` and ``jsonb`` and every store must give the same verdict, and a
# lone surrogate cannot be encoded as UTF-8 for any of them: such a value is refused where
# it enters (an input, a result, an event, an identifier), before any store sees it.

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNFIT = re.compile("[\x00\ud800-\udfff]")


def text_fault(text: str) -> str | None:
    """Why ``text`` cannot be journaled, or None when it can."""
    if "\x00" in text:
        return "string holds a NUL character (U+0000), which the journal does not keep"
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return "string is not valid Unicode (it holds a lone surrogate)"
    return None


def check_text(value: str, what: str, max_length: int = 1024) -> str:
    """Return ``value`` if it is a string the journal keeps as it is (see
    :func:`text_fault`) of at most ``max_length`` characters; raise
    :class:`ValueLimitError` naming ``what`` otherwise.

    For identifiers and plain text fields (run ids, correlation and causation ids, an
    event's ``source``/``id``/``type``, a cancellation's reason).
    """
    if type(value) is not str and not isinstance(value, str):
        raise ValueLimitError(what, f"{type(value).__name__} is not a string", "")
    if len(value) > max_length:
        raise ValueLimitError(what, f"string of {len(value)} characters exceeds "
                                    f"{max_length}", "")
    if not value.isascii() or "\x00" in value:
        reason = text_fault(value)
        if reason is not None:
            raise ValueLimitError(what, reason, "")
    return value


# The longest id a run, a correlation or a causation may have.
MAX_ID = 256


def is_id(text: str) -> bool:
    """Whether ``text`` could be an id (a run's, a correlation's): journaled text of at
    most :data:`MAX_ID` characters. A lookup of anything else finds nothing, on every
    store, without asking one."""
    return len(text) <= MAX_ID and text_fault(text) is None


def clean_text(text: str) -> str:
    """``text`` with what the journal does not keep (NUL, lone surrogates) replaced by
    U+FFFD: for text the engine writes about a value rather than the value itself (an
    error's message, which may quote the input that caused it)."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNFIT.sub("\ufffd", text)


def _fail(what: str, reason: str, path: list[Any]) -> NoReturn:
    raise ValueLimitError(what, reason, _pointer(path))


def _pointer(path: list[Any]) -> str:
    """RFC 6901 JSON pointer of the current position."""
    parts = []
    for step in path:
        if step is _OPENED:
            break  # a container just opened: the position is the container itself
        parts.append(str(step).replace("~", "~0").replace("/", "~1"))
    return "".join("/" + p for p in parts)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


__all__ = ["DEFAULT_LIMITS", "MAX_ID", "Limits", "check_result", "check_size", "check_text",
           "check_value", "clean_text", "get_limits", "is_id", "set_limits", "text_fault"]
