"""A run's records as the planner and the handlers read them: the results later steps
see, and a fan-out's items.

Item ``i`` of step ``sync`` has an :class:`~concordia.store.records.ItemRecord` of its
own, keyed ``("sync", i)``, with its own attempts, result, checkpoint and compensation;
its idempotency key is ``<run>:sync:<i>``. The step's record holds the evaluated list.
"""

from __future__ import annotations

from typing import Any

from concordia.status import WITH_RESULT
from concordia.store.records import ItemKey, ItemRecord, StepRecord


def results_of(steps: dict[str, StepRecord]) -> dict[str, Any]:
    """The results later steps read: succeeded and caught steps'."""
    return {n: r.result for n, r in steps.items() if r.status in WITH_RESULT}


def items_of(step: StepRecord, items: dict[ItemKey, ItemRecord]) -> list[ItemRecord]:
    """Every item of a fan-out step, in list order (one not started yet: pending)."""
    name = step.name
    return [items.get((name, i)) or ItemRecord(name, i) for i in range(len(step.items or ()))]
