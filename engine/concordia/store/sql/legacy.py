"""Step records as stores wrote them up to SQLite schema 6 and PostgreSQL schema 5, moved to
the typed rows of today's (a migration step both dialects run).

Then a step record was a JSON array of its fields in a fixed order (rows written before
the language's constructs stopped after ``finished_at``), and a fan-out's item was a step
record of its own named ``<step>[<index>]`` (a name no step can have: step names are
identifiers). What the old stores read back from such a record is what is written here.
This module is frozen with that format: it never changes with the records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from concordia.store.sql.dialect import Tx

_CHUNK = 2000
# The old array's fields, in order; the typed rows' columns hold the same names.
_FIELDS = ("status", "attempt", "result", "checkpoint", "error", "wake_at", "comp_status",
           "comp_attempt", "comp_error", "started_at", "finished_at", "error_detail",
           "caught", "items")
_JSON = frozenset({"result", "checkpoint", "error_detail", "items"})
_STEP = ("run", "name", *_FIELDS)
_ITEM = ("run", "step", "idx", *_FIELDS[:-1])
_STEP_INSERT = f"INSERT INTO steps ({', '.join(_STEP)}) VALUES ({', '.join('?' * len(_STEP))})"
_ITEM_INSERT = f"INSERT INTO items ({', '.join(_ITEM)}) VALUES ({', '.join('?' * len(_ITEM))})"
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def split_item(name: str) -> tuple[str, int] | None:
    """(step, index) of an old item record's name, or None for a step's own record."""
    if not name.endswith("]"):
        return None
    step, _, index = name[:-1].partition("[")
    return (step, int(index)) if index.isdigit() else None


def fields(record: str) -> dict[str, Any]:
    """An old record's fields by name (those an older row lacks take their defaults)."""
    values = json.loads(record)
    named: dict[str, Any] = {"error_detail": None, "caught": None, "items": None}
    named.update(zip(_FIELDS, values, strict=False))
    return named


def _row(named: dict[str, Any], columns: Sequence[str]) -> list[Any]:
    return [_encode(named[c]) if c in _JSON and named[c] is not None else named[c]
            for c in columns]


def mover(source: str, key: str) -> Callable[[Tx], None]:
    """A migration step: every old record ``source`` reads as (key, key, run key, name,
    record) moved to ``steps`` and ``items``, read ``_CHUNK`` at a time in the order of its
    two ``key`` columns. ``source`` is a query with ``{where}`` where the condition on the
    key goes (its last parameter is the limit)."""

    def move(tx: Tx) -> None:
        query = f"{source} ORDER BY {key} LIMIT ?"
        found = tx.all(query.format(where="1 = 1"), (_CHUNK,))
        while found:
            steps: list[list[Any]] = []
            items: list[list[Any]] = []
            for _, _, num, name, record in found:
                named = fields(record)
                item = split_item(name)
                if item is None:
                    steps.append([num, name, *_row(named, _STEP[2:])])
                else:
                    items.append([num, *item, *_row(named, _ITEM[3:])])
            if steps:
                tx.many(_STEP_INSERT, steps)
            if items:
                tx.many(_ITEM_INSERT, items)
            found = tx.all(query.format(where=f"({key}) > (?, ?)"),
                           (found[-1][0], found[-1][1], _CHUNK))

    return move
