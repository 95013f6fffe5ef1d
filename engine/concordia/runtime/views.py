"""Read-only views of runs handed to callers (``engine.get_run``, ``concordia inspect``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from concordia.errors import UnknownRunError
from concordia.machine.marks import Visit
from concordia.runtime.effects import Flow, read
from concordia.runtime.items import results_of
from concordia.runtime.pending import json_clone
from concordia.status import ENDED, Kind, RunStatus
from concordia.store.changes import Commit
from concordia.store.records import (
    Attempted,
    HistoryEntry,
    ItemKey,
    ItemRecord,
    RunRecord,
    StepRecord,
    copy_step,
)
from concordia.values import is_id, text_fault


@dataclass(frozen=True)
class RunView:
    """A run as the journal knows it: status, state, steps in definition order (a fan-out's
    item records, shown as ``step[i]``, right after their step), history."""

    id: str
    saga: str
    version: int
    status: RunStatus
    state: str
    input: dict[str, Any]
    correlation_id: str
    causation_id: str | None
    error: str | None
    created_at: float
    updated_at: float
    wake_at: float | None
    steps: list[Attempted] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    lease_owner: str | None = None
    lease_expires: float | None = None
    # A child saga's run: the run and step that started it.
    parent_run_id: str | None = None
    parent_step: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def results(self) -> dict[str, Any]:
        """What later steps read as ``results``: succeeded and caught steps (not items)."""
        return results_of({s.name: s for s in self.steps if isinstance(s, StepRecord)})

    def items(self, step: str) -> list[ItemRecord]:
        """A fan-out's item records (of the items that have started), in list order."""
        return [s for s in self.steps if isinstance(s, ItemRecord) and s.step == step]

    def step(self, name: str) -> Attempted:
        """A step's record (or an item's, by its shown name ``step[i]``)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def visits(self) -> list[Visit]:
        """Its records as its saga's diagram sees them (an item as its step)."""
        return [Visit(r.step if isinstance(r, ItemRecord) else r.name, r.status,
                      r.comp_status, r.attempt) for r in self.steps]

    def timed_out(self) -> list[str]:
        """The awaits whose deadline passed."""
        return [h.step for h in self.history if h.kind == Kind.AWAIT_TIMEOUT and h.step]

    def compensated_steps(self) -> list[str]:
        """Steps whose compensation succeeded, in the order they were undone."""
        return [h.step for h in self.history
                if h.kind == Kind.COMPENSATION_SUCCEEDED and h.step is not None]

    def executed_steps(self) -> list[str]:
        return [h.step for h in self.history
                if h.kind == Kind.STEP_SUCCEEDED and h.step is not None]


@dataclass(frozen=True)
class RunDetail:
    """A run with what explains it: each event it emitted or received, and its own cause,
    with its causation chain (oldest first, ending with the event itself)."""

    view: RunView
    chains: dict[str, list[dict[str, Any]]]
    received: list[dict[str, Any]]  # the events that resumed its awaits, in order


def received_ids(view: RunView) -> list[str]:
    """The ids of the events that resumed the run's awaits, in the order they did."""
    return [str(h.detail["event_id"]) for h in view.history
            if h.kind == Kind.AWAIT_RESUMED and h.detail.get("event_id")]


def make_view(order: Iterable[str], run: RunRecord, steps: Iterable[StepRecord],
              history: list[HistoryEntry], events: list[dict[str, Any]],
              decisions: list[dict[str, Any]],
              items: dict[ItemKey, ItemRecord] | None = None) -> RunView:
    """A view of ``run`` with its steps in the definition's ``order`` (untouched steps
    shown as pending), each fan-out's items right after their step."""
    by_name = {s.name: s for s in steps}
    ordered: list[Attempted] = []
    per_step: dict[str, list[ItemRecord]] = {}
    for item in sorted((items or {}).values(), key=lambda i: (i.step, i.index)):
        per_step.setdefault(item.step, []).append(item)
    for name in order:
        ordered.append(by_name.get(name) or StepRecord(name))
        ordered.extend(per_step.get(name, ()))
    return RunView(id=run.id, saga=run.saga, version=run.version,
                   status=RunStatus(run.status), state=run.state, input=json_clone(run.input),
                   correlation_id=run.correlation_id, causation_id=run.causation_id,
                   error=run.error, created_at=run.created_at, updated_at=run.updated_at,
                   wake_at=run.wake_at, steps=ordered, history=history, events=events,
                   decisions=decisions, lease_owner=run.lease_owner,
                   lease_expires=run.lease_expires, parent_run_id=run.parent_run_id,
                   parent_step=run.parent_step)


def created_view(order: Iterable[str], commit: Commit) -> RunView:
    """The view of a run just created: exactly what its creating commit wrote."""
    return make_view(order, commit.run, [copy_step(s) for s in commit.steps],
                     list(commit.history), json_clone([e["envelope"] for e in commit.events]),
                     json_clone(commit.decisions))


def read_view(order_of: Callable[[RunRecord], Iterable[str]], run_id: str
              ) -> Flow[RunView]:
    """Read a whole run and view it; ``order_of(run)`` gives the definition's step order."""
    if not is_id(run_id):  # no run has such an id, on any store
        raise UnknownRunError(run_id)
    loaded = yield from read(lambda s: s.load(run_id))
    if loaded is None:
        raise UnknownRunError(run_id)
    history = yield from read(lambda s: s.history(run_id))
    events = yield from read(lambda s: s.run_events(run_id))
    decisions = yield from read(lambda s: s.decisions(run_id))
    return make_view(order_of(loaded.run), loaded.run, loaded.steps.values(), history,
                     events, decisions, loaded.items)


def read_list(status: str | None, saga: str | None, limit: int) -> Flow[list[RunView]]:
    """Runs without their steps and history (a listing)."""
    if any(v is not None and text_fault(v) is not None for v in (status, saga)):
        return []  # no run matches text the journal cannot hold, on any store
    runs = yield from read(lambda s: s.list_runs(status, saga, limit))
    return [make_view((), r, [], [], [], []) for r in runs]
