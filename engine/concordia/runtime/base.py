"""The engine's shared state and helpers: run creation, commits, emission, scopes, views."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import structlog

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import (
    ActionStep,
    Emit,
    Saga,
)
from concordia.errors import (
    InputError,
    UnknownRunError,
    UnknownSagaError,
)
from concordia.events.bus import Bus
from concordia.events.envelope import new_event
from concordia.events.taxonomy import validate_payload
from concordia.ids import new_id
from concordia.jsonvalidation import check, summarise
from concordia.machine.compile import CompiledSaga
from concordia.registry import Registry
from concordia.runtime.invoke import Invoker, Outcome
from concordia.runtime.matching import MatchSpec
from concordia.runtime.pending import Pending, json_clone, json_copy, utc
from concordia.runtime.views import RunView
from concordia.store.base import Store
from concordia.store.records import (
    Commit,
    HistoryEntry,
    RunRecord,
    StepRecord,
    copy_step,
)

_log = structlog.get_logger("concordia.engine")


class EngineBase:
    """The engine's state and the helpers all of its parts share."""

    catalog: Catalog
    registry: Registry
    store: Store
    clock: Clock
    bus: Bus | None
    source: str
    early_event_ttl: float
    _invoker: Invoker
    _compiled: dict[tuple[str, int], CompiledSaga]
    _matches: dict[tuple[str, int, str], MatchSpec]
    _awaiters: dict[str, list[tuple[str, int, str]]]
    _triggers: dict[str, list[Saga]]
    # Runs this engine created whose first steps' start is already in the creating
    # commit (see _new_run); bounded, since another worker may advance them instead.
    _fresh: OrderedDict[str, None]

    def _saga(self, name: str, version: int | None) -> Saga:
        if version is not None and (name, version) in self._compiled:
            # also versions known only from the store (runs outlive their YAML)
            return self._compiled[(name, version)].saga
        try:
            return self.catalog.saga(name, version)
        except KeyError:
            raise UnknownSagaError(name, [n for n, _ in self.catalog.sagas], version) from None

    def _new_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                 causation_id: str | None, *, run_id: str | None = None,
                 trigger: str | None = None) -> Commit:
        """The commit that creates a run (its input checked against the saga's schema)."""
        errors = check(saga.input_schema, data)
        if errors:
            raise InputError(saga.name, summarise(errors), errors[0].field or None)
        data = json_copy(data)
        now = self.clock.now()
        rid = run_id or new_id()
        compiled = self._compiled[saga.key]
        run = RunRecord(id=rid, saga=saga.name, version=saga.version, status="running",
                        state=compiled.initial, input=data,
                        correlation_id=correlation_id or new_id(), causation_id=causation_id,
                        cause=causation_id or rid, created_at=now, updated_at=now)
        steps = [StepRecord(s.name) for s in saga.steps]
        detail: dict[str, Any] = {"input": data, "correlation_id": run.correlation_id}
        if trigger:
            detail["trigger"] = trigger
        history = [HistoryEntry(rid, now, "run.started", None, None, detail)]
        # The first stage's actions are marked started in the creating commit, so their
        # start is durable before their side effects without a commit of its own.
        first = set(compiled.stages[0])
        for rec in steps:
            if rec.name in first and isinstance(saga.step(rec.name), ActionStep):
                rec.status, rec.attempt, rec.started_at = "running", 1, now
                history.append(HistoryEntry(rid, now, "step.started", rec.name, 1, {}))
        self._fresh[rid] = None
        while len(self._fresh) > 10_000:
            self._fresh.popitem(last=False)
        return Commit(run=run, steps=steps, history=history)

    def _create_run(self, saga: Saga, data: dict[str, Any], correlation_id: str | None,
                    causation_id: str | None, *, run_id: str | None = None) -> Commit:
        commit = self._new_run(saga, data, correlation_id, causation_id, run_id=run_id)
        self.store.create_run(commit)
        return commit

    def _compiled_for(self, run: RunRecord) -> CompiledSaga:
        try:
            return self._compiled[(run.saga, run.version)]
        except KeyError:
            raise UnknownSagaError(run.saga, [n for n, _ in self.catalog.sagas],
                                   run.version) from None

    def _flush(self, pending: Pending) -> None:
        if not pending.dirty:
            return
        commit, transient = self._take_commit(pending)
        self.store.commit(commit)
        self._publish(transient)

    def _take_commit(self, pending: Pending) -> tuple[Commit, list[dict[str, Any]]]:
        """The pending transition as a commit (and its transient events); resets ``pending``."""
        run = pending.run
        run.updated_at = self.clock.now()
        commit = Commit(run=run, steps=list(pending.steps.values()), history=pending.history,
                        events=pending.events, decisions=pending.decisions,
                        awaits_add=pending.awaits_add, awaits_remove=pending.awaits_remove,
                        consume_buffered=pending.consume,
                        buffered_seen=pending.buffered_seen, expect_rev=run.rev)
        transient = [e["envelope"] for e in pending.events if not e["persistent"]]
        pending.steps, pending.history, pending.events, pending.decisions = {}, [], [], []
        pending.awaits_add, pending.awaits_remove, pending.consume = [], [], []
        pending.buffered_seen = []
        pending.dirty = False
        return commit, transient

    def _publish(self, transient: list[dict[str, Any]]) -> None:
        """Publish transient events, after their commit: best effort by definition."""
        if self.bus is None:
            return
        for envelope in transient:
            try:
                self.bus.publish(envelope)
            except Exception as exc:
                _log.warning("event.publish_failed", event_id=envelope["id"], error=str(exc))

    def _emit(self, run: RunRecord, steps: dict[str, StepRecord], emits: Sequence[Emit],
              pending: Pending, now: float) -> None:
        """Build and check every event first; add them all or none."""
        if not emits:
            return
        scope = self._scope(run, steps)
        built: list[dict[str, Any]] = []
        for emit in emits:
            payload = {k: compile_expression(v).evaluate(scope) for k, v in emit.payload.items()}
            definition = validate_payload(self.catalog, emit.event, emit.version, payload)
            envelope = new_event(emit.event, payload, source=self.source,
                                 version=definition.version, correlation_id=run.correlation_id,
                                 causation_id=run.cause, subject=run.id, time=utc(now))
            built.append({"envelope": envelope.to_dict(),
                          "persistent": definition.reliability == "persistent"})
        pending.events.extend(built)
        for item in built:
            env = item["envelope"]
            pending.note(now, "event.emitted", event_id=env["id"], type=env["type"],
                         cause=run.cause)

    def _results(self, steps: dict[str, StepRecord]) -> dict[str, Any]:
        return {n: r.result for n, r in steps.items() if r.status == "succeeded"}

    def _scope(self, run: RunRecord, steps: dict[str, StepRecord]) -> dict[str, Any]:
        return {"input": run.input, "results": self._results(steps),
                "run": {"id": run.id, "saga": run.saga, "version": run.version,
                        "correlation_id": run.correlation_id,
                        "causation_id": run.causation_id or "", "error": run.error or ""}}

    def _get(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    def _load(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord]]:
        """A run with its steps, read together (one revision of both)."""
        loaded = self.store.load(run_id)
        if loaded is None:
            raise UnknownRunError(run_id)
        return loaded

    def _view(self, run: RunRecord, steps: dict[str, StepRecord] | None) -> RunView:
        """A run as the store has it (without its steps and history if ``steps`` is None)."""
        if steps is None:
            return self._make_view(run, [], [], [], [])
        return self._make_view(run, steps.values(), self.store.history(run.id),
                               self.store.run_events(run.id), self.store.decisions(run.id))

    def _created_view(self, commit: Commit) -> RunView:
        """The view of a run just created: exactly what its creating commit wrote."""
        return self._make_view(commit.run, [copy_step(s) for s in commit.steps],
                               list(commit.history),
                               json_clone([e["envelope"] for e in commit.events]),
                               json_clone(commit.decisions))

    def _make_view(self, run: RunRecord, steps: Iterable[StepRecord],
                   history: list[HistoryEntry], events: list[dict[str, Any]],
                   decisions: list[dict[str, Any]]) -> RunView:
        by_name = {s.name: s for s in steps}
        ordered = [by_name[s.name] for s in self._saga(run.saga, run.version).steps
                   if s.name in by_name] if by_name else []
        return RunView(id=run.id, saga=run.saga, version=run.version, status=run.status,
                       state=run.state, input=json_clone(run.input),
                       correlation_id=run.correlation_id, causation_id=run.causation_id,
                       error=run.error,
                       created_at=run.created_at, updated_at=run.updated_at,
                       wake_at=run.wake_at, steps=ordered, history=history, events=events,
                       decisions=decisions)

    def _invoke(self, run: RunRecord, calls: list[tuple[Any, Any, float | None]]) -> list[Outcome]:
        # The invoker binds each call's run_id, saga, step, attempt, correlation_id and
        # causation_id as structlog context variables, in that call's own context.
        return self._invoker.call_many(calls)
