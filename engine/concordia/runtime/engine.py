"""The engine's public face: start runs, drive them, deliver events, operate on runs.

Each pass over a run loads its journal, asks :func:`concordia.runtime.core.plan` what to
do, does it (calls a handler, evaluates a policy, registers an await, applies a machine
move) and accumulates the outcome in one pending commit. The commit is flushed before a
handler is called (so "started" is durable before the side effect) and when the run has
to wait; a step's result and the next step's start therefore share one commit.

The engine is built in layers, each a module: ``base`` (state, commits, emission),
``undo`` (machine moves, compensation), ``forward`` (actions, policies, awaits),
``delivery`` (inbound events) and this one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import structlog

from concordia.clock import Clock, SystemClock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import (
    AwaitStep,
    Saga,
)
from concordia.errors import (
    BindingError,
    ConcordiaError,
    DefinitionChangedError,
)
from concordia.events.bus import Bus
from concordia.logging import ensure_configured
from concordia.machine.compile import COMPENSATION_FAILED, CompiledSaga, compile_saga
from concordia.registry import Registry
from concordia.runtime.delivery import Delivering
from concordia.runtime.invoke import Invoker
from concordia.runtime.matching import MatchSpec, compile_match
from concordia.runtime.pending import Pending
from concordia.runtime.pinning import definition_document, fingerprint
from concordia.runtime.views import RunView
from concordia.store import open_store
from concordia.store.base import ConflictError, Store
from concordia.store.records import (
    ACTIVE,
)

_log = structlog.get_logger("concordia.engine")


class Engine(Delivering):
    """Runs sagas from a :class:`Catalog` with handlers from a :class:`Registry`."""

    def __init__(self, catalog: Catalog, registry: Registry, store: Store | str = "memory://",
                 *, clock: Clock | None = None, bus: Bus | None = None,
                 source: str = "urn:concordia", early_event_ttl: float = 3600.0,
                 check_bindings: bool = True) -> None:
        ensure_configured()
        self.catalog = catalog
        self.registry = registry
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.clock: Clock = clock or SystemClock()
        self.bus = bus
        self.source = source
        self.early_event_ttl = early_event_ttl
        self._invoker = Invoker()
        self._compiled: dict[tuple[str, int], CompiledSaga] = {}
        self._matches: dict[tuple[str, int, str], MatchSpec] = {}
        self._awaiters: dict[str, list[tuple[str, int, str]]] = {}
        self._triggers: dict[str, list[Saga]] = {}
        # Runs this engine created whose first steps' start is already in the creating
        # commit (see _new_run); bounded, since another worker may advance them instead.
        self._fresh: OrderedDict[str, None] = OrderedDict()
        for saga in [*catalog.sagas.values(), *self._pin_definitions()]:
            self._compiled[saga.key] = compile_saga(saga)
            for step in saga.steps:
                if isinstance(step, AwaitStep):
                    self._matches[(saga.name, saga.version, step.name)] = compile_match(step.match)
                    self._awaiters.setdefault(step.event, []).append(
                        (saga.name, saga.version, step.name))
        for name in {n for n, _ in catalog.sagas}:
            latest = catalog.saga(name)
            if latest.trigger is not None:
                self._triggers.setdefault(latest.trigger.event, []).append(latest)
        if check_bindings:
            self._check_bindings()

    def _pin_definitions(self) -> list[Saga]:
        """Record every saga version in the store; refuse versions changed in place.

        Returns the versions the store knows that the catalog no longer holds: runs that
        started on them finish on them, even after their YAML is gone.
        """
        pins = [(s.name, s.version, fingerprint(s), definition_document(s))
                for s in self.catalog.sagas.values()]
        recorded = self.store.pin_definitions(pins)
        # A read-only store records nothing: a version it has not seen is not a change.
        changed = [(n, v) for n, v, fp, _ in pins
                   if recorded.get((n, v), fp if self.store.readonly else None) != fp]
        if changed:
            raise DefinitionChangedError(changed)
        extra = []
        for name, version in sorted(set(recorded) - set(self.catalog.sagas)):
            document = self.store.pinned_definition(name, version)
            if document is not None:
                extra.append(Saga.model_validate(document))
        return extra

    @classmethod
    def from_directory(cls, path: str, registry: Registry,
                       store: Store | str = "sqlite:///concordia.db", **kwargs: Any) -> Engine:
        """Load ``path/definitions`` and ``path/policies`` (or ``path`` itself) strictly."""
        paths = [p for p in (os.path.join(path, "definitions"), os.path.join(path, "policies"))
                 if os.path.isdir(p)] or [path]
        catalog = Catalog.load_strict(paths)
        return cls(catalog, registry, store, **kwargs)

    def _check_bindings(self) -> None:
        bound = {"action": set(self.registry.action_names()),
                 "compensation": set(self.registry.compensation_names())}
        missing = [(kind, name, f"{saga.name} v{saga.version} step {saga.steps[i].name}")
                   for kind, name, saga, i in self.catalog.handler_uses()
                   if name not in bound[kind]]
        if missing:
            raise BindingError(missing)

    def start(self, saga: str, input: Mapping[str, Any] | None = None, *,
              correlation_id: str | None = None, causation_id: str | None = None,
              version: int | None = None, run_id: str | None = None) -> RunView:
        """Create a run (durably) and return it; a worker or ``run_until_idle`` drives it."""
        definition = self._saga(saga, version)
        commit = self._create_run(definition, dict(input or {}), correlation_id,
                                  causation_id, run_id=run_id)
        return self._created_view(commit)

    def run_until_idle(self, max_passes: int | None = None) -> int:
        """Advance every run that has work now, until none has; return passes made."""
        passes = 0
        while max_passes is None or passes < max_passes:
            due = self.store.due_runs(self.clock.now(), 100)
            if not due:
                break
            for run_id in due:
                self.advance(run_id)
                passes += 1
        if self.bus is not None:
            self.relay_outbox()
        return passes

    def drain(self, max_wait: float = 60.0) -> int:
        """Like :meth:`run_until_idle`, then wait for timers due within ``max_wait`` seconds
        (sleeping on the engine's clock; a virtual clock just jumps) until none is left."""
        passes = self.run_until_idle()
        while True:
            wake = self.store.next_wake_at()
            now = self.clock.now()
            if wake is None or wake - now > max_wait:
                return passes
            self.clock.sleep(wake - now)
            passes += self.run_until_idle()

    def work(self, stop: threading.Event | None = None, poll_interval: float = 0.5) -> None:
        """Worker loop: drive runs and fire timers until ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.run_until_idle()
            wake = self.store.next_wake_at()
            delay = poll_interval if wake is None else min(poll_interval,
                                                           max(wake - self.clock.now(), 0.0))
            stop.wait(delay)

    def advance(self, run_id: str) -> None:
        """Drive one run as far as it can go now."""
        try:
            self._advance(run_id)
        except ConflictError:
            # Someone else (a delivery, another worker) moved the run; the next pass
            # reloads it. Handlers already called re-run with the same idempotency key.
            _log.debug("advance.conflict", run_id=run_id)

    def cancel(self, run_id: str, reason: str) -> RunView:
        """Stop a run in flight and compensate what it did; it ends ``cancelled``."""
        run = self._get(run_id)
        if run.status not in ACTIVE or not run.state.startswith("run_"):
            raise ConcordiaError(f"run {run_id} is {run.status} ({run.state}); only a run "
                                 "moving forward can be cancelled")
        pending = Pending(run)
        now = self.clock.now()
        run.cancel_reason = reason
        run.error = f"cancelled: {reason}"
        run.status = "running"
        run.wake_at = None
        pending.note(now, "run.cancel_requested", reason=reason)
        self._flush(pending)
        self.advance(run_id)
        return self.get_run(run_id)

    def retry(self, run_id: str) -> RunView:
        """Resume a run stuck in ``compensation_failed`` (after the cause was fixed)."""
        run, steps = self._load(run_id)
        if run.status != COMPENSATION_FAILED:
            raise ConcordiaError(f"run {run_id} is {run.status}; only a run in "
                                 "compensation_failed can be retried")
        compiled = self._compiled_for(run)
        stuck = [r for r in steps.values() if r.comp_status == "failed"]
        pending = Pending(run)
        now = self.clock.now()
        stage = max(compiled.stage_of[r.name] for r in stuck) if stuck else 0
        for rec in stuck:
            rec.comp_status = None
            rec.comp_attempt = 0
            pending.touch(rec)
        self._move(compiled, run, steps, f"resume_{stage}", pending, now)
        pending.note(now, "run.retried")
        self._flush(pending)
        self.advance(run_id)
        return self.get_run(run_id)

    def relay_outbox(self, limit: int = 500) -> int:
        """Publish pending persistent events to the bus; return how many."""
        if self.bus is None:
            return 0
        sent = 0
        while True:
            batch = self.store.outbox_pending(limit)
            if not batch:
                return sent
            done = []
            for seq, envelope in batch:
                try:
                    self.bus.publish(envelope)
                except Exception as exc:
                    _log.warning("outbox.publish_failed", event_id=envelope["id"],
                                 error=str(exc))
                    break
                done.append(seq)
            self.store.mark_published(done, self.clock.now())
            sent += len(done)
            if len(done) < len(batch):
                return sent

    def causation_chain(self, event_id: str) -> list[dict[str, Any]]:
        """The event and its causes, oldest first (the trigger → ... → this event)."""
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        current: str | None = event_id
        while current and current not in seen:
            seen.add(current)
            envelope = self.store.get_event(current)
            if envelope is None:
                break
            chain.append(envelope)
            current = envelope.get("causationid")
        chain.reverse()
        return chain

    def get_run(self, run_id: str) -> RunView:
        return self._view(*self._load(run_id))

    def list_runs(self, status: str | None = None, saga: str | None = None,
                  limit: int = 100) -> list[RunView]:
        return [self._view(r, None) for r in self.store.list_runs(status, saga, limit)]

    def close(self) -> None:
        self._invoker.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

