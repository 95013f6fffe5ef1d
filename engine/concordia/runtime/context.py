"""What a handler receives: the run's facts, earlier results, ids for tracing, a logger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class StepContext:
    """The context of one attempt of one action.

    ``idempotency_key`` is the same for every attempt of the step in this run, across
    retries and process restarts: pass it to external systems so a re-run is harmless.
    """

    run_id: str
    saga: str
    step: str
    attempt: int
    input: dict[str, Any]
    results: dict[str, Any]
    correlation_id: str
    causation_id: str | None
    idempotency_key: str
    log: Any
    _checkpoint: Callable[[Any], None] = field(repr=False, default=lambda data: None)
    checkpoint_data: Any = None

    def checkpoint(self, data: Any) -> None:
        """Durably record progress *before* a side effect.

        If the step then fails for good, its compensation runs with this data as
        ``ctx.result``; a retry sees it as ``ctx.checkpoint_data``.
        """
        self._checkpoint(data)
        self.checkpoint_data = data


@dataclass(slots=True)
class CompensationContext:
    """The context of one attempt of a compensation.

    ``result`` is the step's journaled result, or its last checkpoint if it failed midway
    (``completed`` tells which).
    """

    run_id: str
    saga: str
    step: str
    attempt: int
    input: dict[str, Any]
    results: dict[str, Any]
    result: Any
    completed: bool
    correlation_id: str
    causation_id: str | None
    idempotency_key: str
    log: Any
    checkpoint_data: Any = None
