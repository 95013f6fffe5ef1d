"""Inbound events: triggers, await resumption, the early-event buffer, one atomic write each.

An event is identified as CloudEvents says, by ``source`` and ``id`` together: the same
pair delivered twice has one effect, while another source's event with the same id is
another event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import AwaitStep, Saga
from concordia.errors import EventError, StoreError, ValueLimitError
from concordia.events.envelope import Envelope
from concordia.events.taxonomy import validate_event
from concordia.runtime.decision import DecisionKind
from concordia.runtime.effects import Flow, publish_best_effort, read, write
from concordia.runtime.emitter import run_fields
from concordia.runtime.executor import Executor
from concordia.runtime.matching import MatchSpec
from concordia.runtime.pending import journal_value
from concordia.runtime.planner import plan
from concordia.runtime.run_pass import RunPass
from concordia.status import RunStatus, StepStatus
from concordia.store.changes import Commit, Delivered, Inbound
from concordia.store.records import AwaitRecord, BufferedEvent

# How many early events of one type are kept for runs that reach their await later; one
# more drops the one that expires first.
MAX_BUFFERED_PER_TYPE = 10_000


@dataclass
class Delivery:
    """What delivering one event did."""

    event_id: str
    duplicate: bool = False
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    buffered: bool = False


class Deliverer:
    """Plans and writes deliveries; its flows run on either engine."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.journaling = executor.journaling
        self.book = executor.book
        self.clock = executor.clock
        self.early_event_ttl = executor.journaling.config.early_event_ttl

    def deliver_many(self, events: Sequence[Envelope | Mapping[str, Any]],
                     batch_size: int = 256, *, claim: bool) -> Flow[list[Delivery]]:
        """Deliver events in order, up to ``batch_size`` of them per store transaction.

        Each event is applied atomically. An event that is malformed or fails validation
        (or whose trigger mapping fails) raises; the events before it are delivered, it and
        those after it are not. ``claim``: lease the runs it starts to this engine.
        """
        pending: list[Envelope | Mapping[str, Any]] = list(events)
        results: list[Delivery] = []
        pos = 0
        while pos < len(pending):
            batch: list[tuple[Inbound, list[dict[str, Any]]]] = []
            claimed: set[str] = set()
            failure: Exception | None = None
            while pos < len(pending) and len(batch) < batch_size:
                try:
                    envelope = self.parse(pending[pos])
                    pending[pos] = envelope
                    planned = yield from self._plan(envelope, claimed, claim)
                except Exception as exc:
                    failure = exc
                    break
                if planned is None:  # touches a run this batch already resumes
                    break
                batch.append(planned)
                pos += 1
            results.extend((yield from self._apply(batch, claim)))
            if failure is not None:
                raise failure
        return results

    @staticmethod
    def parse(item: Envelope | Mapping[str, Any]) -> Envelope:
        envelope = item if isinstance(item, Envelope) else Envelope.from_dict(item)
        try:
            journal_value(envelope.data, f"event {envelope.id} data")
        except ValueLimitError as exc:
            raise EventError(str(exc), event_type=envelope.type,
                             field="data" + exc.path) from None
        return envelope

    def _apply(self, batch: list[tuple[Inbound, list[dict[str, Any]]]], claim: bool
               ) -> Flow[list[Delivery]]:
        if not batch:
            return []
        inbounds = [inbound for inbound, _ in batch]
        statuses = yield from write(lambda s: s.deliver(inbounds))
        results: list[Delivery] = []
        for (inbound, transient), status in zip(batch, statuses, strict=True):
            envelope = inbound.envelope
            if status == Delivered.CONFLICT:  # a run moved since it was read: read again
                results.append((yield from self._again(Envelope.from_dict(envelope), claim)))
                continue
            results.append(_result(inbound, status))
            if status == Delivered.APPLIED and transient:
                yield from publish_best_effort(transient)
        return results

    def _again(self, envelope: Envelope, claim: bool) -> Flow[Delivery]:
        for _ in range(5):
            planned = yield from self._plan(envelope, set(), claim)
            assert planned is not None
            inbound, transient = planned
            # (Each lambda here is called before the loop moves on: B023 cannot bite.)
            status = (yield from write(lambda s: s.deliver([inbound])))[0]  # noqa: B023
            if status == Delivered.CONFLICT:
                continue
            if status == Delivered.APPLIED and transient:
                yield from publish_best_effort(transient)
            return _result(inbound, status)
        raise StoreError(f"event {envelope.id}: the runs it resumes kept changing under it; "
                         "nothing was delivered, deliver it again")

    def _plan(self, envelope: Envelope, claimed: set[str], claim: bool
              ) -> Flow[tuple[Inbound, list[dict[str, Any]]] | None]:
        """What delivering ``envelope`` writes (and the transient events to publish after),
        or None if it would resume a run in ``claimed``; adds the runs it resumes there."""
        validate_event(self.journaling.catalog, envelope)
        data = envelope.to_dict()
        now = self.clock.now()
        inbound = Inbound(data, now, buffer_limit=MAX_BUFFERED_PER_TYPE)
        for saga in self.book.triggers.get(envelope.type, []):
            inbound.creates.append(self._triggered_run(saga, envelope, data, claim))
        resumed: dict[str, RunPass] = {}
        for saga_name, version, step_name in self.book.awaiters.get(envelope.type, []):
            spec = self.book.matches[(saga_name, version, step_name)]
            key = spec.event_key({"event": data})
            awaits = yield from read(lambda s: s.find_awaits(envelope.type, key))  # noqa: B023
            for rec in awaits:
                inbound.awaits_seen.append((rec.run_id, rec.step))
                if (rec.saga, rec.version, rec.step) != (saga_name, version, step_name):
                    continue
                if rec.run_id in claimed:
                    return None
                yield from self._resume(rec, spec, data, resumed, now)
        claimed.update(resumed)
        transient: list[dict[str, Any]] = []
        for p in resumed.values():
            commit, events = p.pending.take(now)
            inbound.resumes.append(commit)
            transient.extend(events)
        if not resumed and envelope.type in self.book.awaiters:
            keys = {self.book.matches[a].event_key({"event": data})
                    for a in self.book.awaiters[envelope.type]}
            for key in keys:
                inbound.buffer.append(BufferedEvent(
                    f"{envelope.id}" if len(keys) == 1 else f"{envelope.id}:{key}",
                    envelope.type, key, data, now + self.early_event_ttl))
        return inbound, transient

    def _triggered_run(self, saga: Saga, envelope: Envelope, data: dict[str, Any],
                       claim: bool) -> Commit:
        assert saga.trigger is not None
        if saga.trigger.input:
            scope = {"event": data}
            run_input = {k: compile_expression(v).evaluate(scope)
                         for k, v in saga.trigger.input.items()}
        else:
            run_input = dict(envelope.data or {})
        return self.executor.creator.new_run(saga, run_input, envelope.correlationid,
                                             envelope.id, trigger=envelope.id, claim=claim,
                                             traceparent=data.get("traceparent"))

    def _resume(self, rec: AwaitRecord, spec: MatchSpec, envelope: dict[str, Any],
                resumed: dict[str, RunPass], now: float) -> Flow[None]:
        """Resume ``rec``'s run into its pending transition, if it still awaits and matches.

        Several awaits of one run (parallel steps) resumed by one event share one commit.
        """
        j = self.journaling
        p = resumed.get(rec.run_id)
        if p is None:
            j.forget(rec.run_id)  # the delivery writes the run from here on
            loaded = yield from read(lambda s: s.load(rec.run_id))
            if loaded is None:
                return None
            run = loaded.run
            p = RunPass.of(loaded, self.book.of(run.saga, run.version))
        run = p.run
        srec = p.steps.get(rec.step)
        if srec is None or srec.status != StepStatus.AWAITING:
            return None
        scope = {"input": run.input, "results": p.results, "run": run_fields(run),
                 "event": envelope}
        if not spec.matches(scope):
            return None
        step = p.compiled.steps[rec.step]
        assert isinstance(step, AwaitStep)
        p.pending.awaits_remove.append((run.id, rec.step))
        tracer = j.tracer
        if tracer.active:  # tracing: the await's span
            if tracer.needs(run):
                tracer.learn(run, (yield from read(lambda s: s.history(run.id))))
            tracer.resumed(run, rec.step, envelope)
        self.executor.awaits.resume_with(p, step, srec, envelope, now)
        run.status = RunStatus.RUNNING
        run.wake_at = None
        p.pending.dirty = True
        resumed[run.id] = p
        # The machine moves that follow are pure (no handler runs): take them in the same
        # commit, so an await that ends its stage, or the saga, costs no extra write.
        while (decision := plan(p.compiled, run, p.steps, p.items, now)).kind == (
                DecisionKind.MOVE):
            assert decision.move is not None
            j.move(p, decision.move, now)
        return None


def _result(inbound: Inbound, status: Delivered) -> Delivery:
    result = Delivery(inbound.envelope["id"], duplicate=status == Delivered.DUPLICATE)
    if status == Delivered.APPLIED:
        result.started = [c.run.id for c in inbound.creates]
        result.resumed = [c.run.id for c in inbound.resumes]
        result.buffered = bool(inbound.buffer)
    return result
