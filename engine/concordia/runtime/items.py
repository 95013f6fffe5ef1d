"""Names of a fan-out's items: each item is journaled as a step record of its own.

Item ``i`` of step ``sync`` is the record ``sync[i]`` (a name no step can have: step names
are identifiers), with its own attempts, result, checkpoint and compensation; its
idempotency key is ``<run>:sync:<i>``. The parent record ``sync`` holds the evaluated list.
"""

from __future__ import annotations

from functools import lru_cache

from concordia.machine.compile import CompiledSaga


@lru_cache(maxsize=256)
def item_names(step: str, count: int) -> tuple[str, ...]:
    """The record names of a fan-out's ``count`` items (cached: the planner reads them on
    every decision about the step)."""
    return tuple(f"{step}[{i}]" for i in range(count))


def item_name(step: str, index: int) -> str:
    return f"{step}[{index}]"


def split_item(name: str) -> tuple[str, int] | None:
    """(step, index) of an item record's name, or None for a step's own record."""
    if not name.endswith("]"):
        return None
    step, _, index = name[:-1].partition("[")
    return (step, int(index)) if index.isdigit() else None


def is_item(name: str) -> bool:
    return name[-1:] == "]"


def stage_index(compiled: CompiledSaga, name: str) -> int:
    """The stage of a step, or of the step an item belongs to."""
    split = split_item(name)
    return compiled.stage_of[split[0] if split else name]
