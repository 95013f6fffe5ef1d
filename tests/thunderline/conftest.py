"""Fixtures for the Thunderline tests: a fresh world, and handler contexts shaped like the
engine's (run id, step, attempt, input, results, ids, logger, ``checkpoint``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from thunderline.handlers import ThunderlineHandlers
from thunderline.world import World


def _json(data: Any) -> Any:
    """What a journal would give back: handlers must hand over JSON-serialisable data."""
    return json.loads(json.dumps(data))


@dataclass
class FakeStepContext:
    """An action's context. ``checkpoint`` keeps every checkpoint, as the journal would
    keep the last one."""

    step: str
    input: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    saga: str = "test_saga"
    attempt: int = 1
    correlation_id: str = field(default_factory=lambda: f"corr-{uuid.uuid4()}")
    causation_id: str | None = None
    idempotency_key: str = ""
    checkpoint_data: Any = None
    checkpoints: list[Any] = field(default_factory=list)
    log: Any = field(default_factory=lambda: structlog.get_logger("test"))

    def __post_init__(self) -> None:
        if not self.idempotency_key:
            self.idempotency_key = f"{self.run_id}:{self.step}"

    def checkpoint(self, data: dict[str, Any]) -> None:
        saved = _json(data)
        self.checkpoints.append(saved)
        self.checkpoint_data = saved

    def retry(self) -> FakeStepContext:
        """The next attempt: same key, the last checkpoint visible, a higher attempt."""
        return FakeStepContext(
            step=self.step, input=self.input, results=self.results, run_id=self.run_id,
            saga=self.saga, attempt=self.attempt + 1, correlation_id=self.correlation_id,
            causation_id=self.causation_id, idempotency_key=self.idempotency_key,
            checkpoint_data=self.checkpoint_data, checkpoints=list(self.checkpoints))


@dataclass
class FakeCompensationContext:
    step: str
    result: Any
    checkpoint_data: Any = None
    completed: bool = True
    input: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    saga: str = "test_saga"
    attempt: int = 1
    correlation_id: str = "corr-compensation"
    causation_id: str | None = None
    idempotency_key: str = ""
    log: Any = field(default_factory=lambda: structlog.get_logger("test"))


@dataclass
class FakeItemContext(FakeStepContext):
    """The context of one item of a fan-out: its item, its index, and ``vars``."""

    item: Any = None
    index: int = 0
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeItemCompensationContext(FakeCompensationContext):
    item: Any = None
    index: int = 0
    vars: dict[str, Any] = field(default_factory=dict)


def undo_of(ctx: FakeStepContext, result: Any = None) -> FakeCompensationContext:
    """The compensation context the engine builds for the step ``ctx`` ran: its result
    if it completed, else its last checkpoint."""
    completed = result is not None
    return FakeCompensationContext(
        step=ctx.step, result=_json(result) if completed else ctx.checkpoint_data,
        checkpoint_data=ctx.checkpoint_data, completed=completed, input=ctx.input,
        results=ctx.results, run_id=ctx.run_id, saga=ctx.saga,
        correlation_id=ctx.correlation_id, causation_id=ctx.causation_id,
        idempotency_key=f"{ctx.run_id}:{ctx.step}:compensate")


@pytest.fixture
def world() -> Iterator[World]:
    with World(":memory:", seed=7) as w:
        yield w


@pytest.fixture
def handlers(world: World) -> ThunderlineHandlers:
    return ThunderlineHandlers(world)
