"""Read-only views of runs handed to callers (``engine.get_run``, ``concordia inspect``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from concordia.errors import UnknownRunError
from concordia.runtime.effects import Flow, Read
from concordia.runtime.items import is_item, results_of, split_item
from concordia.runtime.pending import json_clone
from concordia.status import ENDED, Kind, RunStatus
from concordia.store.records import Commit, HistoryEntry, RunRecord, StepRecord, copy_step
from concordia.values import text_fault


@dataclass(frozen=True)
class RunView:
    """A run as the journal knows it: status, state, steps in definition order (a fan-out's
    items, ``step[i]``, right after their step), history."""

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
    steps: list[StepRecord] = field(default_factory=list)
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
        return results_of({s.name: s for s in self.steps})

    def items(self, step: str) -> list[StepRecord]:
        """A fan-out's item records, in list order."""
        found = [(split_item(s.name), s) for s in self.steps]
        return [s for key, s in sorted((k, s) for k, s in found if k and k[0] == step)]

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def compensated_steps(self) -> list[str]:
        """Steps whose compensation succeeded, in the order they were undone."""
        return [h.step for h in self.history
                if h.kind == Kind.COMPENSATION_SUCCEEDED and h.step is not None]

    def executed_steps(self) -> list[str]:
        return [h.step for h in self.history
                if h.kind == Kind.STEP_SUCCEEDED and h.step is not None]


def make_view(order: Iterable[str], run: RunRecord, steps: Iterable[StepRecord],
              history: list[HistoryEntry], events: list[dict[str, Any]],
              decisions: list[dict[str, Any]]) -> RunView:
    """A view of ``run`` with its steps in the definition's ``order`` (untouched steps
    shown as pending)."""
    by_name = {s.name: s for s in steps}
    ordered = [by_name.get(name) or StepRecord(name) for name in order]
    if any(is_item(name) for name in by_name):  # a fan-out's items, each after its step
        ordered = _with_items(ordered, by_name)
    return RunView(id=run.id, saga=run.saga, version=run.version,
                   status=RunStatus(run.status), state=run.state, input=json_clone(run.input),
                   correlation_id=run.correlation_id, causation_id=run.causation_id,
                   error=run.error, created_at=run.created_at, updated_at=run.updated_at,
                   wake_at=run.wake_at, steps=ordered, history=history, events=events,
                   decisions=decisions, lease_owner=run.lease_owner,
                   lease_expires=run.lease_expires, parent_run_id=run.parent_run_id,
                   parent_step=run.parent_step)


def _with_items(ordered: list[StepRecord], by_name: dict[str, StepRecord]
                ) -> list[StepRecord]:
    items: dict[str, list[tuple[int, StepRecord]]] = {}
    for name, rec in by_name.items():
        split = split_item(name)
        if split is not None:
            items.setdefault(split[0], []).append((split[1], rec))
    out: list[StepRecord] = []
    for rec in ordered:
        out.append(rec)
        out.extend(r for _, r in sorted(items.get(rec.name, ()), key=lambda e: e[0]))
    return out


def created_view(order: Iterable[str], commit: Commit) -> RunView:
    """The view of a run just created: exactly what its creating commit wrote."""
    return make_view(order, commit.run, [copy_step(s) for s in commit.steps],
                     list(commit.history), json_clone([e["envelope"] for e in commit.events]),
                     json_clone(commit.decisions))


# The longest id a run, a correlation or a causation may have.
MAX_ID = 256


def is_run_id(text: str) -> bool:
    """Whether ``text`` could be a run's id: ids are journaled text of at most
    :data:`MAX_ID` characters (a lookup of anything else finds nothing, on every store)."""
    return len(text) <= MAX_ID and text_fault(text) is None


def read_view(order_of: Any, run_id: str) -> Flow[RunView]:
    """Read a whole run and view it; ``order_of(run)`` gives the definition's step order."""
    if not is_run_id(run_id):  # no run has such an id, on any store
        raise UnknownRunError(run_id)
    loaded = yield Read("load", run_id)
    if loaded is None:
        raise UnknownRunError(run_id)
    run, steps = loaded
    history = yield Read("history", run_id)
    events = yield Read("run_events", run_id)
    decisions = yield Read("decisions", run_id)
    return make_view(order_of(run), run, steps.values(), history, events, decisions)


def read_list(status: str | None, saga: str | None, limit: int) -> Flow[list[RunView]]:
    """Runs without their steps and history (a listing)."""
    if any(v is not None and text_fault(v) is not None for v in (status, saga)):
        return []  # no run matches text the journal cannot hold, on any store
    runs = yield Read("list_runs", status, saga, limit)
    return [make_view((), r, [], [], [], []) for r in runs]
