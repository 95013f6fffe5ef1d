"""Creating a run: its input and ids checked, its first commit built.

Used by ``start``, by deliveries that trigger sagas, and by child saga steps.
"""

from __future__ import annotations

from typing import Any

from concordia.clock import Clock
from concordia.definitions.models import Saga
from concordia.errors import InputError, ValueLimitError
from concordia.ids import new_id
from concordia.jsonvalidation import check, summarise
from concordia.runtime.book import SagaBook
from concordia.runtime.config import EngineConfig
from concordia.runtime.pending import journal_value
from concordia.status import Kind, RunStatus, StepStatus
from concordia.store.changes import Commit
from concordia.store.records import HistoryEntry, RunRecord, StepRecord
from concordia.tracing import RunTracer
from concordia.values import MAX_ID, text_fault


class Creator:
    """Builds the commits that create runs, for one engine."""

    def __init__(self, book: SagaBook, clock: Clock, config: EngineConfig,
                 tracer: RunTracer) -> None:
        self.book = book
        self.clock = clock
        self.config = config
        self.tracer = tracer

    def new_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                causation_id: str | None, *, run_id: str | None = None,
                trigger: str | None = None, claim: bool = True,
                traceparent: str | None = None) -> Commit:
        """The commit that creates a run (its input checked against the saga's schema).

        With ``claim`` the run is leased to this engine and its first actions are marked
        started: their start is durable before their side effects without a commit of its
        own (the engine's next pass runs them).
        """
        try:
            data = journal_value(data, f"the input of saga {saga.name}")
        except ValueLimitError as exc:
            raise InputError(saga.name, str(exc), exc.path or None) from None
        for name, value in (("correlation_id", correlation_id),
                            ("causation_id", causation_id), ("run_id", run_id)):
            if value is not None and (len(value) > MAX_ID or text_fault(value)):
                why = text_fault(value) or f"longer than {MAX_ID} characters"
                raise InputError(saga.name, f"{name}: {why}", name)
        errors = check(saga.input_schema, data)
        if errors:
            raise InputError(saga.name, summarise(errors), errors[0].field or None)
        now = self.clock.now()
        rid = run_id or new_id()
        compiled = self.book.of(saga.name, saga.version)
        run = RunRecord(id=rid, saga=saga.name, version=saga.version,
                        status=RunStatus.RUNNING, state=compiled.initial, input=data,
                        correlation_id=correlation_id or new_id(), causation_id=causation_id,
                        cause=causation_id or rid, created_at=now, updated_at=now)
        detail: dict[str, Any] = {"input": data, "correlation_id": run.correlation_id}
        if trigger:
            detail["trigger"] = trigger
        if traced := self.tracer.run_started(run, traceparent):
            detail["traceparent"] = traced  # tracing: every later span is the run's child
        history = [HistoryEntry(rid, now, Kind.RUN_STARTED, None, None, detail)]
        steps: list[StepRecord] = []
        if claim:
            run.lease_owner, run.lease_expires = self.config.owner, now + self.config.lease_ttl
            for name in compiled.stages[0]:
                if name in compiled.plain_actions:
                    steps.append(StepRecord(name, StepStatus.RUNNING, 1, started_at=now))
                    history.append(HistoryEntry(rid, now, Kind.STEP_STARTED, name, 1, {}))
        return Commit(run=run, steps=steps, history=history)
