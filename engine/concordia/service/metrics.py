"""Prometheus metrics: runs by saga and status, step latency, outbox lag, webhook outcomes.

Run counts come from the store at scrape time, so they are the same whichever process
(this server's worker or separate ``concordia worker`` processes) moved the runs, and they
survive restarts: ``concordia_runs_started_total`` counts every run, the
``..._completed/_compensated/_failed/_cancelled_total`` counters the runs in those final
statuses (a run never leaves one, so they only grow), and ``concordia_runs`` is the
number in each status now (``suspended`` ones await an event; ``compensation_failed``
ones wait for an operator, and leave that status when retried, which is why it is a
gauge). Step latency is measured here, around the handlers this process runs, per saga,
step, kind (action or compensation) and outcome. Outbox lag: how many persistent events
wait to be published, and the age of the oldest. Refused requests:
``concordia_api_denied_total`` by reason (``missing_credentials``, ``invalid_token``,
``expired_token``, ``insufficient_scope``, ``host_not_allowed``, ``cross_origin``,
``unsupported_media_type``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concordia.registry import Registry
from concordia.status import FINAL, RUN_STATUSES
from concordia.timestamps import parse_timestamp

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0)


class StoreSnapshot:
    """A collector over the last figures read from the store (set before each scrape)."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, str, int]] = []
        self.backlog: tuple[int, str | None] = (0, None)
        self.now = 0.0
        # Running runs: (saga, lease owner, lease expiry), for the leases that lapsed.
        self.leases: list[tuple[str, str | None, float | None]] = []

    def collect(self) -> Iterable[Metric]:
        started = CounterMetricFamily("concordia_runs_started", "Runs started, by saga",
                                      labels=["saga"])
        ended = {status: CounterMetricFamily(f"concordia_runs_{status}",
                                             f"Runs that ended {status}, by saga",
                                             labels=["saga"])
                 for status in sorted(FINAL)}
        current = GaugeMetricFamily("concordia_runs", "Runs in each status now, by saga",
                                    labels=["saga", "status"])
        by_saga: dict[str, dict[str, int]] = {}
        for saga, status, n in self.counts:
            by_saga.setdefault(saga, {})[status] = n
        for saga, statuses in sorted(by_saga.items()):
            started.add_metric([saga], sum(statuses.values()))
            for status, family in ended.items():
                family.add_metric([saga], statuses.get(status, 0))
            for status in RUN_STATUSES:
                current.add_metric([saga, str(status)], statuses.get(status, 0))
        yield started
        yield from ended.values()
        yield current
        pending, oldest = self.backlog
        yield GaugeMetricFamily("concordia_outbox_pending_events",
                                "Persistent events waiting in the outbox", value=pending)
        age = 0.0
        if oldest is not None:
            try:
                age = max(self.now - parse_timestamp(oldest).timestamp(), 0.0)
            except ValueError:
                age = 0.0
        yield GaugeMetricFamily("concordia_outbox_lag_seconds",
                                "Age of the oldest event waiting in the outbox", value=age)
        # A lapsed lease is a worker that died or stalled mid-step: its runs wait until
        # another worker carries them on (an alert watches this series).
        lapsed = GaugeMetricFamily("concordia_runs_lease_expired",
                                   "Running runs whose worker's lease has expired, by saga",
                                   labels=["saga"])
        expired: dict[str, int] = {}
        for saga, owner, expires in self.leases:
            if owner is not None and expires is not None and expires < self.now:
                expired[saga] = expired.get(saga, 0) + 1
        # Every saga with runs has the series (0 when no lease lapsed), as the others do.
        for saga in sorted(set(by_saga) | set(expired)):
            lapsed.add_metric([saga], expired.get(saga, 0))
        yield lapsed


class Metrics:
    """This app's metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.snapshot = StoreSnapshot()
        self.registry.register(self.snapshot)
        self.step_seconds = Histogram(
            "concordia_step_duration_seconds", "Handler time per attempt of a step or of "
            "its compensation, in this process", ["saga", "step", "kind", "outcome"],
            buckets=_BUCKETS, registry=self.registry)
        self.webhooks = Counter("concordia_webhook_requests", "POST /events by outcome",
                                ["outcome"], registry=self.registry)
        self.runs_requested = Counter("concordia_api_runs_requested",
                                      "POST /runs by outcome", ["outcome"],
                                      registry=self.registry)
        self.denied = Counter("concordia_api_denied", "Requests refused before their route "
                              "(credentials, scope, Host, origin, content type), by reason",
                              ["reason"], registry=self.registry)

    def render(self, counts: list[tuple[str, str, int]], backlog: tuple[int, str | None],
               now: float | None = None,
               leases: list[tuple[str, str | None, float | None]] | None = None) -> bytes:
        """The metrics text; ``leases``: each running run's (saga, lease owner, expiry)."""
        self.snapshot.counts = counts
        self.snapshot.backlog = backlog
        self.snapshot.leases = leases or []
        self.snapshot.now = time.time() if now is None else now
        return generate_latest(self.registry)

    def instrument(self, registry: Registry) -> Registry:
        """A registry whose handlers are ``registry``'s, timed into ``step_seconds``."""
        timed = Registry()
        for name in registry.action_names():
            b = registry.get_action(name)
            timed.add_action(name, self._timed(b.fn, b.is_async, "action"))
        for name in registry.compensation_names():
            b = registry.get_compensation(name)
            timed.add_compensation(name, self._timed(b.fn, b.is_async, "compensation"))
        return timed

    def _timed(self, fn: Callable[..., Any], is_async: bool, kind: str) -> Callable[..., Any]:
        observe = self.step_seconds

        def record(ctx: Any, began: float, outcome: str) -> None:
            observe.labels(getattr(ctx, "saga", "?"), getattr(ctx, "step", "?"), kind,
                           outcome).observe(time.perf_counter() - began)

        if is_async:
            @functools.wraps(fn)
            async def timed_async(ctx: Any) -> Any:
                began = time.perf_counter()
                outcome = "error"
                try:
                    result = await fn(ctx)
                    outcome = "ok"
                    return result
                finally:
                    record(ctx, began, outcome)

            return timed_async

        @functools.wraps(fn)
        def timed_sync(ctx: Any) -> Any:
            began = time.perf_counter()
            outcome = "error"
            try:
                result = fn(ctx)
                outcome = "ok"
                return result
            finally:
                record(ctx, began, outcome)

        return timed_sync

