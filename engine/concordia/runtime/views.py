"""Read-only views of runs handed to callers (``engine.get_run``, ``concordia inspect``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concordia.store.records import HistoryEntry, StepRecord


@dataclass(frozen=True)
class RunView:
    """A run as the journal knows it: status, state, steps in definition order, history."""

    id: str
    saga: str
    version: int
    status: str
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

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "compensated", "failed", "cancelled",
                               "compensation_failed")

    @property
    def results(self) -> dict[str, Any]:
        return {s.name: s.result for s in self.steps if s.status == "succeeded"}

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def compensated_steps(self) -> list[str]:
        """Steps whose compensation succeeded, in the order they were undone."""
        return [h.step for h in self.history
                if h.kind == "compensation.succeeded" and h.step is not None]

    def executed_steps(self) -> list[str]:
        return [h.step for h in self.history
                if h.kind == "step.succeeded" and h.step is not None]
