"""Names of a fan-out's items: each item is journaled as a step record of its own.

Item ``i`` of step ``sync`` is the record ``sync[i]`` (a name no step can have: step names
are identifiers), with its own attempts, result, checkpoint and compensation; its
idempotency key is ``<run>:sync:<i>``. The parent record ``sync`` holds the evaluated list.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from concordia.machine.compile import CompiledSaga
from concordia.status import StepStatus
from concordia.store.records import StepRecord


@lru_cache(maxsize=256)
def item_names(step: str, count: int) -> tuple[str, ...]:
    """The record names of a fan-out's ``count`` items (cached: the planner reads them on
    every decision about the step)."""
    return tuple(f"{step}[{i}]" for i in range(count))


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


_WITH_RESULT = frozenset({StepStatus.SUCCEEDED, StepStatus.CAUGHT})


def results_of(steps: dict[str, StepRecord]) -> dict[str, Any]:
    """The results later steps read: succeeded and caught steps' (not items')."""
    return {n: r.result for n, r in steps.items()
            if r.status in _WITH_RESULT and not is_item(n)}
