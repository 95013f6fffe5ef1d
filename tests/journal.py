"""Reading a store's journal in tests: a run's step and item records by the names runs show
them under (``sync`` for a step, ``sync[2]`` for an item of its fan-out)."""

from __future__ import annotations

from concordia.store.base import Store
from concordia.store.records import Attempted


def records_of(store: Store, run_id: str) -> dict[str, Attempted]:
    """Every record a run has written (none for a run that does not exist)."""
    loaded = store.load(run_id)
    if loaded is None:
        return {}
    records: dict[str, Attempted] = dict(loaded.steps)
    records.update((item.name, item) for item in loaded.items.values())
    return records
