"""The events a run emits, and the scope its expressions are evaluated in.

An expression sees ``input``, ``results`` (earlier steps' results), ``run`` (the run's
ids) and, in a match, ``event``. Converting a value for the expression library costs in
proportion to its size, so ``results`` holds only the steps an expression names when it
names them statically (``results.charge``, ``results["charge"]``): a step's cost does
not grow with the number of results the run has gathered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.expressions import compile_expression, result_references
from concordia.definitions.models import Emit
from concordia.errors import EventError, ValueLimitError
from concordia.events.envelope import new_event
from concordia.events.taxonomy import validate_payload
from concordia.runtime.pending import Pending, utc
from concordia.status import Kind
from concordia.store.records import RunRecord
from concordia.values import check_value

_RESULTS_TOKEN = re.compile(r"(?<![\w.])results(?!\w)")


@lru_cache(maxsize=4096)
def referenced_results(source: str) -> tuple[str, ...] | None:
    """The step names ``source`` reads through ``results``, or None when it reads
    ``results`` in a way the names cannot be told from the text (then it gets them all)."""
    names = tuple(dict.fromkeys(result_references(source)))
    uses = len(_RESULTS_TOKEN.findall(source))
    return names if uses <= len(result_references(source)) else None


def run_fields(run: RunRecord) -> dict[str, Any]:
    return {"id": run.id, "saga": run.saga, "version": run.version,
            "correlation_id": run.correlation_id, "causation_id": run.causation_id or "",
            "error": run.error or ""}


def scope_for(source: str, run: RunRecord, results: Mapping[str, Any]) -> dict[str, Any]:
    """The variables ``source`` is evaluated with."""
    names = referenced_results(source)
    picked = dict(results) if names is None else {n: results[n] for n in names if n in results}
    return {"input": run.input, "results": picked, "run": run_fields(run)}


def evaluate(source: str, run: RunRecord, results: Mapping[str, Any]) -> Any:
    return compile_expression(source).evaluate(scope_for(source, run, results))


class Emitter:
    """Builds a run's events: payloads mapped by CEL, checked against the taxonomy."""

    def __init__(self, catalog: Catalog, source: str,
                 payload: Callable[[Emit, RunRecord, Mapping[str, Any]], dict[str, Any]]
                 ) -> None:
        self.catalog = catalog
        self.source = source
        self.payload = payload  # an event's payload, mapped from the run (see judge.py)
        # A run's W3C traceparent (tracing), carried by its events as the CloudEvents
        # distributed-tracing extension.
        self.traceparent_of: Callable[[str], str | None] | None = None

    def emit(self, run: RunRecord, results: Mapping[str, Any], emits: Sequence[Emit],
             pending: Pending, now: float) -> None:
        """Build and check every event first, then add them all to ``pending`` (or none:
        an ``EventError`` or ``ExpressionError`` leaves ``pending`` as it was)."""
        if not emits:
            return
        built: list[dict[str, Any]] = []
        for emit in emits:
            payload = self.payload(emit, run, results)
            try:
                check_value(payload, f"the payload of event {emit.event}")
            except ValueLimitError as exc:
                raise EventError(str(exc), event_type=emit.event,
                                 field="data" + exc.path) from None
            definition = validate_payload(self.catalog, emit.event, emit.version, payload)
            traced = self.traceparent_of(run.id) if self.traceparent_of else None
            envelope = new_event(emit.event, payload, source=self.source,
                                 version=definition.version, correlation_id=run.correlation_id,
                                 causation_id=run.cause, subject=run.id, time=utc(now),
                                 extensions={"traceparent": traced} if traced else None)
            built.append({"envelope": envelope.to_dict(),
                          "persistent": definition.reliability == "persistent"})
        pending.events.extend(built)
        for item in built:
            env = item["envelope"]
            pending.note(now, Kind.EVENT_EMITTED, event_id=env["id"], type=env["type"],
                         cause=run.cause)
