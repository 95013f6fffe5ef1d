"""OpenTelemetry spans for runs, step attempts and compensations, and the W3C
``traceparent`` that carries a trace across the bus.

Spans go through ``opentelemetry-api`` only: the application configures a tracer provider
(the SDK, an exporter) or not. Until it does, :class:`RunTracer` does nothing at all, not
even the read it needs to learn a run's trace, and the API is not even imported (a worker
that does not trace does not pay for it in memory).

A run lives longer than any process: its passes happen on whichever worker holds it. So
the run's span is started and ended when the run is created (a child of the trace of the
event that triggered it, or of the caller's current span) and its context is journaled in
the run's ``run.started`` history line as a ``traceparent``; every later span of the run,
on any worker, is a child of that context, so one trace holds the whole run:

- ``run <saga>``: the run's creation (attributes: run id, saga, version, correlation id);
- ``step <name>``: one attempt of an action (attribute ``concordia.attempt``; status error
  when it failed);
- ``compensate <name>``: one attempt of a compensation;
- ``await <name>``: an awaited event arrived (a link to the event's own span when it
  carries a ``traceparent``);
- ``run <status>``: the run reached an end.

Events a run emits carry the run's ``traceparent`` as the CloudEvents distributed-tracing
extension attribute, so a service that receives them continues the same trace.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from concordia.status import Kind
from concordia.store.records import HistoryEntry, RunRecord

__all__ = ["RunTracer", "format_traceparent", "make_tracer", "parse_traceparent"]

_REMEMBERED = 10_000  # runs whose trace a worker keeps


def make_tracer() -> RunTracer:
    """The engine's tracer: idle until the application configures OpenTelemetry."""
    return RunTracer()


def _api() -> Any:
    """``opentelemetry.trace`` if the application imported it, else None (never imported
    here first: an application that traces has imported it to configure it)."""
    return sys.modules.get("opentelemetry.trace")


def format_traceparent(context: Any) -> str:
    """A span context as a W3C ``traceparent`` value."""
    return (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{int(context.trace_flags):02x}")


def parse_traceparent(value: Any) -> Any | None:
    """The remote span context a ``traceparent`` value names, or None if it is malformed."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


class RunTracer:
    """The spans of runs (see the module docstring); one per engine."""

    def __init__(self) -> None:
        self._tracer: Any = None
        # run id -> the run span's context (None: the run was started untraced)
        self._runs: OrderedDict[str, Any] = OrderedDict()

    @property
    def active(self) -> bool:
        """Whether the application configured a tracer provider (checked each time: it
        may do so after the engine was built)."""
        api = _api()
        return api is not None and not isinstance(api.get_tracer_provider(),
                                                  api.ProxyTracerProvider)

    def _get(self) -> Any:
        if self._tracer is None:
            from concordia.version import __version__

            self._tracer = _api().get_tracer("concordia", __version__)
        return self._tracer

    @staticmethod
    def _under(parent: Any) -> Any:
        """An OpenTelemetry context whose current span is the remote ``parent``."""
        if parent is None:
            return None
        api = _api()
        return api.set_span_in_context(api.NonRecordingSpan(parent))

    def _remember(self, run_id: str, context: Any) -> None:
        self._runs[run_id] = context
        self._runs.move_to_end(run_id)
        if len(self._runs) > _REMEMBERED:
            self._runs.popitem(last=False)

    # -- runs ----------------------------------------------------------------------------------

    def run_started(self, run: RunRecord, parent: str | None) -> str | None:
        """Record the run's span (a child of ``parent``, a trigger event's traceparent, or
        of the current span); return its traceparent, to be journaled with the run."""
        if not self.active:
            return None
        span = self._get().start_span(f"run {run.saga}", context=self._under(
            parse_traceparent(parent)), attributes={
            "concordia.run_id": run.id, "concordia.saga": run.saga,
            "concordia.saga_version": run.version,
            "concordia.correlation_id": run.correlation_id})
        span.end()
        self._remember(run.id, span.get_span_context())
        return format_traceparent(span.get_span_context())

    def needs(self, run: RunRecord) -> bool:
        """Whether the run's trace is to be learnt from its history first."""
        return self.active and run.id not in self._runs

    def learn(self, run: RunRecord, history: Iterable[HistoryEntry]) -> None:
        """Take the run's trace from its ``run.started`` line."""
        for entry in history:
            if entry.kind == Kind.RUN_STARTED:
                self._remember(run.id, parse_traceparent(entry.detail.get("traceparent")))
                return
        self._remember(run.id, None)

    def traceparent(self, run_id: str) -> str | None:
        """The traceparent events the run emits carry (its span's)."""
        context = self._runs.get(run_id)
        return None if context is None else format_traceparent(context)

    def _child(self, run_id: str, name: str, attributes: dict[str, Any],
               links: Sequence[Any] = ()) -> Any:
        return self._get().start_span(name, context=self._under(self._runs.get(run_id)),
                                      attributes=attributes, links=list(links))

    def run_ended(self, run: RunRecord, status: str) -> None:
        if self.active:
            self._child(run.id, f"run {status}", {"concordia.run_id": run.id,
                                                 "concordia.status": status,
                                                 "concordia.error": run.error or ""}).end()

    # -- calls ---------------------------------------------------------------------------------

    def calls_started(self, run: RunRecord, calls: Sequence[tuple[str, int]], *,
                      compensation: bool = False) -> list[Any]:
        """Spans for handler calls about to be made: (step, attempt) each."""
        if not self.active:
            return []
        kind = "compensate" if compensation else "step"
        return [self._child(run.id, f"{kind} {step}", {
            "concordia.run_id": run.id, "concordia.saga": run.saga, "concordia.step": step,
            "concordia.attempt": attempt, "concordia.compensation": compensation})
            for step, attempt in calls]

    def calls_ended(self, spans: Sequence[Any], outcomes: Sequence[Any]) -> None:
        if not spans:
            return
        from opentelemetry.trace import Status, StatusCode

        for span, outcome in zip(spans, outcomes, strict=False):
            if not outcome.ok:
                error = outcome.error
                if isinstance(error, BaseException):
                    span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()

    def resumed(self, run: RunRecord, step: str, envelope: dict[str, Any]) -> None:
        """An awaited event arrived; linked to the event's own span when it has one."""
        if not self.active:
            return
        from opentelemetry.trace import Link

        remote = parse_traceparent(envelope.get("traceparent"))
        span = self._child(run.id, f"await {step}", {
            "concordia.run_id": run.id, "concordia.step": step,
            "concordia.event_id": str(envelope.get("id")),
            "concordia.event_type": str(envelope.get("type"))},
            links=[Link(remote)] if remote else ())
        span.end(end_time=time.time_ns())
