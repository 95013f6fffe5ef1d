"""The journal's records: runs, steps and fan-out items, history entries, awaits, early
events (what a store keeps; what is written to it is in :mod:`concordia.store.changes`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from concordia.status import CompStatus, RunStatus, StepStatus

# The detail of a history line that has none: one shared object, never to be changed.
_NO_DETAIL: dict[str, Any] = {}


@dataclass(slots=True)
class RunRecord:
    """One saga run, pinned to the definition version it started with."""

    id: str
    saga: str
    version: int
    status: RunStatus
    state: str
    input: dict[str, Any]
    correlation_id: str
    causation_id: str | None
    cause: str  # the id the run's next emitted events name as their cause
    created_at: float
    updated_at: float
    wake_at: float | None = None
    error: str | None = None
    cancel_reason: str | None = None
    compensated_any: bool = False
    rev: int = 0
    # The lease: which worker owns the run until when. A worker takes it in the commit
    # that starts a step, renews it while the handler runs and clears it when its pass
    # ends; others leave a run alone until its lease has expired.
    lease_owner: str | None = None
    lease_expires: float | None = None
    # A child saga's run: the run and step that started it (and wait for its end).
    parent_run_id: str | None = None
    parent_step: str | None = None

    def leased_to_other(self, owner: str, now: float) -> bool:
        """Whether another worker holds a lease on this run that has not expired."""
        return (self.lease_owner is not None and self.lease_owner != owner
                and self.lease_expires is not None and self.lease_expires > now)


@dataclass(slots=True)
class StepRecord:
    """The journal of one step: its forward attempts and its compensation."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    result: Any = None
    checkpoint: Any = None
    error: str | None = None
    wake_at: float | None = None
    comp_status: CompStatus | None = None  # None: not started
    comp_attempt: int = 0
    comp_error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # The last failure as structured data ({type, title, status, message, details}; see
    # concordia.runtime.problem), beside ``error``, its one-line text.
    error_detail: dict[str, Any] | None = None
    # The index of the catch entry that matched the failure, if any.
    caught: int | None = None
    # A fan-out's list, evaluated once when the step starts (each item has an
    # :class:`ItemRecord` of its own once it has started).
    items: list[Any] | None = None
    # A fan-out's planning hint, never journaled (0 when read back): how many of its first
    # items are known to have succeeded, so that deciding the next item does not look at
    # every item again. Only ever grows: a succeeded item stays so going forward.
    done_items: int = 0

    @property
    def has_effect(self) -> bool:
        """Whether the world may have changed: a result, or a checkpoint of a partial run."""
        return self.status == StepStatus.SUCCEEDED or self.checkpoint is not None


@dataclass(slots=True)
class ItemRecord:
    """The journal of one item of a fan-out (``for_each``): its attempts and compensation,
    as a step's (see :class:`StepRecord`), under its step's name and its index."""

    step: str
    index: int
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    result: Any = None
    checkpoint: Any = None
    error: str | None = None
    wake_at: float | None = None
    comp_status: CompStatus | None = None
    comp_attempt: int = 0
    comp_error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error_detail: dict[str, Any] | None = None
    caught: int | None = None

    @property
    def key(self) -> ItemKey:
        return (self.step, self.index)

    @property
    def name(self) -> str:
        """How the item is shown (``sync[2]``); never parsed back."""
        return f"{self.step}[{self.index}]"

    @property
    def has_effect(self) -> bool:
        return self.status == StepStatus.SUCCEEDED or self.checkpoint is not None


# An item's identity: its step's name and its index in the step's list.
ItemKey = tuple[str, int]
# What journals attempts: a step, or an item of a fan-out.
Attempted = StepRecord | ItemRecord


class Loaded(NamedTuple):
    """A run with the records of the steps and items it has touched (read together: one
    consistent revision); steps and items not in them are pending."""

    run: RunRecord
    steps: dict[str, StepRecord]
    items: dict[ItemKey, ItemRecord]


class HistoryEntry(NamedTuple):
    """An append-only line of a run's history (a tuple: several are made per step)."""

    run_id: str
    at: float
    kind: str
    step: str | None = None
    attempt: int | None = None
    detail: dict[str, Any] = _NO_DETAIL


@dataclass(frozen=True, slots=True)
class AwaitRecord:
    """A run suspended on an event type; ``key`` indexes the match expression's run side."""

    run_id: str
    step: str
    event_type: str
    key: str | None
    saga: str
    version: int


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    """An event that arrived before any run awaited it, kept for a while (early callbacks)."""

    event_id: str
    event_type: str
    key: str | None
    envelope: dict[str, Any]
    expires_at: float


R = TypeVar("R")


def _cloner(cls: type[R]) -> Callable[[R], R]:
    """A shallow copy for a record dataclass, several times faster than ``copy.copy``
    (which goes through ``__reduce_ex__``); records are copied on every read and write."""
    get = attrgetter(*(f.name for f in dataclasses.fields(cls)))  # type: ignore[arg-type]

    def clone(rec: R) -> R:
        return cls(*get(rec))

    return clone


copy_run = _cloner(RunRecord)
copy_step = _cloner(StepRecord)
copy_item = _cloner(ItemRecord)
