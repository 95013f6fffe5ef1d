"""Inbound events: triggers, await resumption, the early-event buffer, one atomic write each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from concordia.definitions.expressions import compile_expression
from concordia.definitions.models import (
    AwaitStep,
    Saga,
)
from concordia.errors import (
    StoreError,
)
from concordia.events.envelope import Envelope
from concordia.events.taxonomy import validate_event
from concordia.runtime.core import plan
from concordia.runtime.forward import Forward
from concordia.runtime.matching import MatchSpec
from concordia.runtime.pending import Pending
from concordia.store.records import (
    APPLIED,
    CONFLICT,
    DUPLICATE,
    AwaitRecord,
    BufferedEvent,
    Commit,
    Inbound,
    StepRecord,
)


@dataclass
class Delivery:
    """What delivering one event did."""

    event_id: str
    duplicate: bool = False
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    buffered: bool = False


class Delivering(Forward):
    """Takes inbound events (``deliver``, ``deliver_many``)."""

    def deliver(self, event: Envelope | Mapping[str, Any]) -> Delivery:
        """Take one inbound event: start the sagas it triggers, resume the runs awaiting it.

        The same event id delivered twice has one effect. An event nothing awaits yet is
        kept for ``early_event_ttl`` seconds, so a callback faster than its saga is not lost.
        Everything a delivery writes (the inbox entry, the runs it starts, the resumptions,
        the buffered copy) is one atomic unit: a crash leaves all of it or none, so a
        redelivery after a crash is never mistaken for a duplicate of a lost delivery.
        """
        return self.deliver_many([event])[0]

    def deliver_many(self, events: Iterable[Envelope | Mapping[str, Any]], *,
                     batch_size: int = 256) -> list[Delivery]:
        """Deliver events in order, up to ``batch_size`` of them per store transaction.

        Each event is applied atomically and exactly as :meth:`deliver` would. An event that
        is malformed or fails validation (or whose trigger mapping fails) raises; the events
        before it are delivered, it and those after it are not.
        """
        pending = list(events)
        results: list[Delivery] = []
        pos = 0
        while pos < len(pending):
            batch: list[tuple[Inbound, list[dict[str, Any]]]] = []
            claimed: set[str] = set()
            try:
                while pos < len(pending) and len(batch) < batch_size:
                    item = pending[pos]
                    if not isinstance(item, Envelope):
                        item = pending[pos] = Envelope.from_dict(item)
                    planned = self._plan_delivery(item, claimed)
                    if planned is None:  # touches a run this batch already resumes
                        break
                    batch.append(planned)
                    pos += 1
            finally:
                results.extend(self._apply_deliveries(batch))
        return results

    def _apply_deliveries(self, batch: list[tuple[Inbound, list[dict[str, Any]]]]
                          ) -> list[Delivery]:
        if not batch:
            return []
        statuses = self.store.apply_delivery([inbound for inbound, _ in batch])
        results: list[Delivery] = []
        for (inbound, transient), status in zip(batch, statuses, strict=True):
            envelope = inbound.envelope
            if status == CONFLICT:  # a run moved since it was read: read again, alone
                results.append(self._deliver_again(Envelope.from_dict(envelope)))
                continue
            result = Delivery(envelope["id"], duplicate=status == DUPLICATE)
            if status == APPLIED:
                result.started = [c.run.id for c in inbound.creates]
                result.resumed = [c.run.id for c in inbound.resumes]
                result.buffered = bool(inbound.buffer)
                self._publish(transient)
            results.append(result)
        return results

    def _deliver_again(self, envelope: Envelope) -> Delivery:
        for _ in range(5):
            planned = self._plan_delivery(envelope, set())
            assert planned is not None
            inbound, transient = planned
            status = self.store.apply_delivery([inbound])[0]
            if status == CONFLICT:
                continue
            result = Delivery(envelope.id, duplicate=status == DUPLICATE)
            if status == APPLIED:
                result.started = [c.run.id for c in inbound.creates]
                result.resumed = [c.run.id for c in inbound.resumes]
                result.buffered = bool(inbound.buffer)
                self._publish(transient)
            return result
        raise StoreError(f"event {envelope.id}: the runs it resumes kept changing under it; "
                         "nothing was delivered, deliver it again")

    def _plan_delivery(self, envelope: Envelope, claimed: set[str]
                       ) -> tuple[Inbound, list[dict[str, Any]]] | None:
        """What delivering ``envelope`` writes (and the transient events to publish after),
        or None if it would resume a run in ``claimed``; adds the runs it resumes there."""
        validate_event(self.catalog, envelope)
        data = envelope.to_dict()
        now = self.clock.now()
        inbound = Inbound(data, now)
        for saga in self._triggers.get(envelope.type, []):
            inbound.creates.append(self._triggered_run(saga, envelope, data))
        resumed: dict[str, tuple[Pending, dict[str, StepRecord]]] = {}
        for saga_name, version, step_name in self._awaiters.get(envelope.type, []):
            spec = self._matches[(saga_name, version, step_name)]
            key = spec.event_key({"event": data})
            for rec in self.store.find_awaits(envelope.type, key):
                inbound.awaits_seen.append((rec.run_id, rec.step))
                if (rec.saga, rec.version, rec.step) != (saga_name, version, step_name):
                    continue
                if rec.run_id in claimed:
                    return None
                self._plan_resume(rec, spec, data, resumed, now)
        claimed.update(resumed)
        transient: list[dict[str, Any]] = []
        for pending, _ in resumed.values():
            commit, events = self._take_commit(pending)
            inbound.resumes.append(commit)
            transient.extend(events)
        if not resumed and envelope.type in self._awaiters:
            keys = {self._matches[a].event_key({"event": data})
                    for a in self._awaiters[envelope.type]}
            for key in keys:
                inbound.buffer.append(BufferedEvent(
                    f"{envelope.id}" if len(keys) == 1 else f"{envelope.id}:{key}",
                    envelope.type, key, data, now + self.early_event_ttl))
        return inbound, transient

    def _triggered_run(self, saga: Saga, envelope: Envelope, data: dict[str, Any]) -> Commit:
        assert saga.trigger is not None
        if saga.trigger.input:
            scope = {"event": data}
            run_input = {k: compile_expression(v).evaluate(scope)
                         for k, v in saga.trigger.input.items()}
        else:
            run_input = dict(envelope.data or {})
        return self._new_run(saga, run_input, envelope.correlationid, envelope.id,
                             trigger=envelope.id)

    def _plan_resume(self, rec: AwaitRecord, spec: MatchSpec, envelope: dict[str, Any],
                     resumed: dict[str, tuple[Pending, dict[str, StepRecord]]],
                     now: float) -> None:
        """Resume ``rec``'s run into its pending transition, if it still awaits and matches.

        Several awaits of one run (parallel steps) resumed by one event share one commit.
        """
        if rec.run_id in resumed:
            pending, steps = resumed[rec.run_id]
            run = pending.run
        else:
            loaded = self.store.load(rec.run_id)
            if loaded is None:
                return
            run, steps = loaded
            pending = Pending(run)
        srec = steps.get(rec.step)
        if srec is None or srec.status != "awaiting":
            return
        if not spec.matches({**self._scope(run, steps), "event": envelope}):
            return
        step = self._saga(run.saga, run.version).step(rec.step)
        assert isinstance(step, AwaitStep)
        pending.awaits_remove.append((run.id, rec.step))
        self._resume_with(run, steps, step, srec, envelope, pending, now)
        run.status = "running"
        run.wake_at = None
        pending.dirty = True
        resumed[run.id] = (pending, steps)
        # The machine moves that follow are pure (no handler runs): take them in the same
        # commit, so an await that ends its stage, or the saga, costs no extra write.
        compiled = self._compiled_for(run)
        while (next_step := plan(compiled, run, steps, now)).kind == "move":
            assert next_step.event is not None
            self._move(compiled, run, steps, next_step.event, pending, now)

