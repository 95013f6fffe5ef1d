"""One pass over one run: the records read, the commit being built, the results so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from concordia.machine.compile import CompiledSaga
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.items import results_of
from concordia.runtime.pending import Pending
from concordia.store.records import ItemKey, ItemRecord, Loaded, RunRecord, StepRecord


@dataclass(slots=True)
class RunPass:
    """One pass over one run: what was read, what is being written."""

    run: RunRecord
    steps: dict[str, StepRecord]
    items: dict[ItemKey, ItemRecord]
    compiled: CompiledSaga
    pending: Pending
    results: dict[str, Any]  # the succeeded steps' results, kept up to date
    writes: int = 0

    @classmethod
    def of(cls, loaded: Loaded, compiled: CompiledSaga) -> RunPass:
        """A pass over a run as read (the records handed over to it)."""
        steps = with_defaults(compiled, loaded.steps)
        return cls(loaded.run, steps, loaded.items, compiled, Pending(loaded.run),
                   results_of(steps))


@dataclass(slots=True)
class PassResult:
    """What a pass did: whether it wrote anything, and a handler's request to stop."""

    wrote: bool
    stop: HandlerStopError | None = None


NOTHING = PassResult(False)


def with_defaults(compiled: CompiledSaga, stored: dict[str, StepRecord]
                  ) -> dict[str, StepRecord]:
    """Every step's record: a store keeps only the steps a run has touched."""
    if len(stored) == len(compiled.steps):
        return stored
    return {name: stored.get(name) or StepRecord(name) for name in compiled.steps}
