"""Await matching: which suspended runs an event may resume, found by index, not by scan.

A match expression such as ``event.data.run_id == results.create_run.run_id`` is split
into top-level ``&&`` conjuncts; the first that is an ``A == B`` (not under a ``||`` or
``?:``, which bind looser) whose one side reads only ``event`` and whose other side reads
only the run (``input``, ``results``, ``run``) becomes the index key: its run side is
evaluated when the run suspends and stored with the await, its event side when an event
arrives, so delivery looks up candidates by (type, key). The whole expression is still
evaluated on every candidate before it resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from concordia.definitions.expressions import Expression, compile_expression
from concordia.errors import ExpressionError

RUN_VARS = frozenset({"input", "results", "run"})


@dataclass(frozen=True, slots=True)
class MatchSpec:
    """A compiled match expression and its index key halves (None when not indexable)."""

    full: Expression | None
    event_side: Expression | None
    run_side: Expression | None

    def run_key(self, run_scope: dict[str, Any]) -> str | None:
        if self.run_side is None:
            return None
        try:
            return _key(self.run_side.evaluate(run_scope))
        except ExpressionError:
            return None

    def event_key(self, event_scope: dict[str, Any]) -> str | None:
        if self.event_side is None:
            return None
        try:
            return _key(self.event_side.evaluate(event_scope))
        except ExpressionError:
            return None

    def matches(self, scope: dict[str, Any]) -> bool:
        if self.full is None:
            return True
        try:
            return self.full.evaluate(scope) is True
        except ExpressionError:
            return False  # an event missing the field simply does not match


def compile_match(source: str | None) -> MatchSpec:
    if not source:
        return MatchSpec(None, None, None)
    full = compile_expression(source)
    for conjunct in _split_top(source, "&&"):
        # `||` and `?:` bind looser than `==`: under them an equality decides nothing alone.
        if len(_split_top(conjunct, "||")) > 1 or len(_split_top(conjunct, "?")) > 1:
            continue
        sides = _split_top(conjunct, "==")
        if len(sides) != 2:
            continue
        left, right = (compile_expression(s) for s in sides)
        if left.variables == {"event"} and right.variables and right.variables <= RUN_VARS:
            return MatchSpec(full, left, right)
        if right.variables == {"event"} and left.variables and left.variables <= RUN_VARS:
            return MatchSpec(full, right, left)
    return MatchSpec(full, None, None)


# The longest key kept as it is. Keys are indexed for the await lookup, and an index entry
# has a size limit (PostgreSQL's btree: about 2.7 KB): a longer key is kept as its digest,
# the same on both sides of the match, so every store finds the same awaits.
MAX_KEY = 256


def _key(value: Any) -> str:
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    if len(text) <= MAX_KEY:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(value: Any) -> Any:
    """``value`` with integral floats as ints: CEL finds ``1001 == 1001.0`` true, so both
    must give one key (JSON from other producers writes either form)."""
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is dict:
        return {k: _canonical(v) for k, v in value.items()}
    if kind is list:
        return [_canonical(v) for v in value]
    return value


def _split_top(source: str, op: str) -> list[str]:
    """Split on ``op`` outside brackets and string literals (CEL's: quoted once or three
    times, raw when prefixed ``r``/``R``, where a backslash escapes nothing)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    raw = False
    start = 0
    i = 0
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\" and not raw:
                i += 2
                continue
            if source.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif ch in "\"'":
            quote = ch * 3 if source.startswith(ch * 3, i) else ch
            raw = _raw_prefix(source, i)
            i += len(quote)
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and source.startswith(op, i) and not (
                op == "==" and (source[i - 1:i] in ("!", "<", ">", "=")
                                or source[i + 2:i + 3] == "=")):
            parts.append(source[start:i].strip())
            i += len(op)
            start = i
            continue
        i += 1
    parts.append(source[start:].strip())
    return parts


def _raw_prefix(source: str, quote_at: int) -> bool:
    """Whether the literal opening at ``quote_at`` is raw (``r``, ``R``, ``rb``, ``br``...)."""
    prefix = source[max(quote_at - 2, 0):quote_at]
    while prefix and prefix[0] not in "rRbB":
        prefix = prefix[1:]
    before = source[quote_at - len(prefix) - 1:quote_at - len(prefix)]
    return "r" in prefix.lower() and not (before.isalnum() or before == "_")
