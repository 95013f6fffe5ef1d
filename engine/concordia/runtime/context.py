"""What a handler receives: the run's facts, earlier results, ids for tracing, a logger.

A handler may change what it is given without changing the journal: ``input`` and each
earlier result are copied on first use, so a step pays for the results it reads, not for
every result the run has gathered. Contexts are made for every attempt, so they are
plain slotted objects whose logger is bound only when a handler asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol

import structlog

from concordia.runtime.pending import json_clone

_logger = structlog.get_logger("concordia.handler")
_UNSET: Any = object()


class Checkpointer(Protocol):
    """Where an attempt's checkpoints go (the engine provides it)."""

    def save(self, data: Any) -> Any: ...
    async def asave(self, data: Any) -> Any: ...


class Results(Mapping[str, Any]):
    """Earlier steps' journaled results by step name, each copied when first read."""

    __slots__ = ("_copies", "_source")

    def __init__(self, source: Mapping[str, Any]) -> None:
        self._source = source
        self._copies: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            return self._copies[name]
        except KeyError:
            value = self._copies[name] = json_clone(self._source[name])
            return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"Results({sorted(self._source)})"


class _Context:
    """What every handler context has."""

    __slots__ = ("_input", "_input_copy", "_log", "attempt", "causation_id",
                 "correlation_id", "idempotency_key", "results", "run_id", "saga", "step")
    _extra_log_fields: ClassVar[dict[str, Any]] = {}

    def __init__(self, run_id: str, saga: str, step: str, attempt: int, input: Any,
                 results: Mapping[str, Any], correlation_id: str, causation_id: str | None,
                 idempotency_key: str) -> None:
        self.run_id = run_id
        self.saga = saga
        self.step = step
        self.attempt = attempt
        self._input = input
        self._input_copy: Any = _UNSET
        self.results: Mapping[str, Any] = (results if isinstance(results, Results)
                                           else Results(results))
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.idempotency_key = idempotency_key
        self._log: Any = None

    @property
    def input(self) -> dict[str, Any]:
        """The run's input (a copy, made on first use)."""
        if self._input_copy is _UNSET:
            self._input_copy = json_clone(self._input)
        value: dict[str, Any] = self._input_copy
        return value

    @property
    def log(self) -> Any:
        """A structlog logger bound to run_id, saga, step, attempt, correlation_id and
        causation_id (bound on first use: most handlers never log)."""
        if self._log is None:
            self._log = _logger.bind(run_id=self.run_id, saga=self.saga, step=self.step,
                                     attempt=self.attempt,
                                     correlation_id=self.correlation_id,
                                     causation_id=self.causation_id,
                                     **self._extra_log_fields)
        return self._log


class StepContext(_Context):
    """The context of one attempt of one action.

    ``idempotency_key`` is the same for every attempt of the step in this run, across
    retries, process restarts and workers: pass it to external systems so a re-run is
    harmless.
    """

    __slots__ = ("_checkpoints", "checkpoint_data")

    def __init__(self, run_id: str, saga: str, step: str, attempt: int, input: Any,
                 results: Mapping[str, Any], correlation_id: str, causation_id: str | None,
                 idempotency_key: str, checkpoints: Checkpointer | None = None,
                 checkpoint_data: Any = None) -> None:
        super().__init__(run_id, saga, step, attempt, input, results, correlation_id,
                         causation_id, idempotency_key)
        self._checkpoints = checkpoints
        self.checkpoint_data = checkpoint_data

    def checkpoint(self, data: Any) -> None:
        """Durably record progress *before* a side effect.

        If the step then fails for good, its compensation runs with this data as
        ``ctx.result``; a retry sees it as ``ctx.checkpoint_data``. In an async handler
        prefer ``await ctx.acheckpoint(data)``, which does not block the event loop.
        """
        if self._checkpoints is not None:
            self._checkpoints.save(data)
        self.checkpoint_data = data

    async def acheckpoint(self, data: Any) -> None:
        """:meth:`checkpoint` for async handlers: awaits the write instead of blocking."""
        if self._checkpoints is not None:
            await self._checkpoints.asave(data)
        self.checkpoint_data = data

    def __repr__(self) -> str:
        return (f"StepContext(run_id={self.run_id!r}, saga={self.saga!r}, step={self.step!r}, "
                f"attempt={self.attempt})")


class CompensationContext(_Context):
    """The context of one attempt of a compensation.

    ``result`` is the step's journaled result, or its last checkpoint if it failed midway
    (``completed`` tells which).
    """

    __slots__ = ("_result", "_result_copy", "checkpoint_data", "completed")
    _extra_log_fields: ClassVar[dict[str, Any]] = {"compensation": True}

    def __init__(self, run_id: str, saga: str, step: str, attempt: int, input: Any,
                 results: Mapping[str, Any], correlation_id: str, causation_id: str | None,
                 idempotency_key: str, result: Any, completed: bool,
                 checkpoint_data: Any = None) -> None:
        super().__init__(run_id, saga, step, attempt, input, results, correlation_id,
                         causation_id, idempotency_key)
        self._result = result
        self._result_copy: Any = _UNSET
        self.completed = completed
        self.checkpoint_data = checkpoint_data

    @property
    def result(self) -> Any:
        """What the step returned, or its checkpoint if it failed midway (a copy)."""
        if self._result_copy is _UNSET:
            self._result_copy = json_clone(self._result)
        return self._result_copy

    def __repr__(self) -> str:
        return (f"CompensationContext(run_id={self.run_id!r}, saga={self.saga!r}, "
                f"step={self.step!r}, attempt={self.attempt})")


class ItemContext(StepContext):
    """The context of one attempt of one item of a fan-out (``for_each``).

    ``item`` is the item (a copy), ``index`` its place in the list; ``vars`` maps the
    step's ``as`` name (``item`` by default) to the item. ``idempotency_key`` is the
    item's own (``<run>:<step>:<index>``), and ``checkpoint`` records the item's progress.
    """

    __slots__ = ("index", "item", "vars")

    def __init__(self, run_id: str, saga: str, step: str, attempt: int, input: Any,
                 results: Mapping[str, Any], correlation_id: str, causation_id: str | None,
                 idempotency_key: str, checkpoints: Checkpointer | None = None,
                 checkpoint_data: Any = None, *, item: Any = None, index: int = 0,
                 name: str = "item") -> None:
        super().__init__(run_id, saga, step, attempt, input, results, correlation_id,
                         causation_id, idempotency_key, checkpoints, checkpoint_data)
        self.item = json_clone(item)
        self.index = index
        self.vars: Mapping[str, Any] = {name: self.item}

    def __repr__(self) -> str:
        return (f"ItemContext(run_id={self.run_id!r}, saga={self.saga!r}, step={self.step!r}, "
                f"index={self.index}, attempt={self.attempt})")


class ItemCompensationContext(CompensationContext):
    """The context of the compensation of one item of a fan-out: ``result`` is the item's
    result (or its checkpoint), ``item``, ``index`` and ``vars`` as for the item."""

    __slots__ = ("index", "item", "vars")

    def __init__(self, run_id: str, saga: str, step: str, attempt: int, input: Any,
                 results: Mapping[str, Any], correlation_id: str, causation_id: str | None,
                 idempotency_key: str, result: Any, completed: bool,
                 checkpoint_data: Any = None, *, item: Any = None, index: int = 0,
                 name: str = "item") -> None:
        super().__init__(run_id, saga, step, attempt, input, results, correlation_id,
                         causation_id, idempotency_key, result, completed, checkpoint_data)
        self.item = json_clone(item)
        self.index = index
        self.vars: Mapping[str, Any] = {name: self.item}
