"""What a handler receives: the run's facts, earlier results, ids for tracing, a logger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

_logger = structlog.get_logger("concordia.handler")


def _bound(fields: dict[str, Any]) -> Any:
    return _logger.bind(**fields)


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
    _log_fields: dict[str, Any] = field(repr=False, default_factory=dict)
    _checkpoint: Callable[[Any], None] = field(repr=False, default=lambda data: None)
    checkpoint_data: Any = None
    _log: Any = field(repr=False, default=None)

    @property
    def log(self) -> Any:
        """A structlog logger bound to run_id, saga, step, attempt, correlation_id and
        causation_id (bound on first use: most handlers never log)."""
        if self._log is None:
            self._log = _bound(self._log_fields)
        return self._log

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
    _log_fields: dict[str, Any] = field(repr=False, default_factory=dict)
    checkpoint_data: Any = None
    _log: Any = field(repr=False, default=None)

    @property
    def log(self) -> Any:
        """A structlog logger bound to the run's fields and ``compensation=True``."""
        if self._log is None:
            self._log = _bound(self._log_fields)
        return self._log
