"""Tracing: spans for each run, step attempt, compensation and awaited event, one trace
across two services joined by the bus (the W3C traceparent in the CloudEvents
distributed-tracing extension), and nothing at all while no tracer provider is set."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from concordia import Catalog, Engine, InMemoryBus, Registry, VirtualClock, new_event
from concordia.errors import PermanentError
from concordia.status import Kind
from concordia.tracing import parse_traceparent

TREE = {
    "events.yaml": """
        events:
          - name: lab.job.done
            version: 1
            reliability: persistent
            payload_schema: {job: {type: string, required: true}}
          - name: lab.review.passed
            version: 1
            reliability: persistent
            payload_schema: {job: {type: string, required: true}}
    """,
    "train.yaml": """
        name: train
        version: 1
        input_schema: {job: {type: string, required: true}}
        steps:
          - name: fit
            action: lab.fit
            compensate: none
            reason: training only reads data
            emit:
              - event: lab.job.done
                payload: {job: input.job}
    """,
    "publish.yaml": """
        name: publish
        version: 1
        trigger:
          event: lab.job.done
          input: {job: event.data.job}
        input_schema: {job: {type: string, required: true}}
        steps:
          - name: register
            action: lab.register
            compensate: lab.unregister
          - name: review
            await: lab.review.passed
            match: event.data.job == input.job
            timeout: 1h
          - name: announce
            action: lab.announce
            compensate: none
            reason: a notice
    """,
}


def catalog(tmp_path: Path) -> Catalog:
    for name, text in TREE.items():
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip())
    return Catalog.load_strict([str(tmp_path)])


def registry() -> Registry:
    reg = Registry()
    reg.add_action("lab.fit", lambda ctx: {"model": "m1"})
    reg.add_action("lab.register", lambda ctx: {"id": 7})
    reg.add_compensation("lab.unregister", lambda ctx: None)

    def announce(ctx: Any) -> None:
        raise PermanentError("channel closed")

    reg.add_action("lab.announce", announce)
    return reg


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A tracer provider for this test only (the API lets a process set one once; the
    test puts the API's state back so that other tests run untraced)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    trace._TRACER_PROVIDER = None  # as opentelemetry's own tests reset it
    trace._TRACER_PROVIDER_SET_ONCE = Once()


def test_one_trace_crosses_the_bus_from_one_service_to_the_next(
        tmp_path: Path, spans: InMemorySpanExporter) -> None:
    defs = catalog(tmp_path)
    bus = InMemoryBus()
    with Engine(defs, registry(), "memory://", clock=VirtualClock(), bus=bus,
                source="urn:lab:trainer") as trainer, \
            Engine(defs, registry(), f"sqlite:///{tmp_path / 'b.db'}", clock=VirtualClock(),
                   source="urn:lab:publisher") as publisher:
        trained = trainer.start("train", {"job": "j1"})
        trainer.run_until_idle()
        [done] = [e for e in bus.published if e["type"] == "lab.job.done"]
        assert parse_traceparent(done["traceparent"]) is not None
        # Over the bus to the other service: the event starts a run there.
        [started] = publisher.deliver(done).started
        publisher.run_until_idle()
        review = new_event("lab.review.passed", {"job": "j1"}, source="urn:lab:review",
                           version=1, extensions={"traceparent": done["traceparent"]})
        publisher.deliver(review)
        publisher.run_until_idle()
        assert publisher.get_run(started).status == "compensated"
        first = trainer.get_run(trained.id).history[0]
        assert first.kind == Kind.RUN_STARTED
    got = spans.get_finished_spans()
    names = [s.name for s in got]
    assert names.count("run train") == 1
    assert names.count("run publish") == 1
    for name in ("step fit", "step register", "step announce", "await review",
                 "compensate register", "run completed", "run compensated"):
        assert name in names, names
    # One trace: the publisher's run is a child of the trainer's run, whose context the
    # event carried across the bus.
    assert len({s.context.trace_id for s in got}) == 1
    by_name = {s.name: s for s in got}
    train_run, publish_run = by_name["run train"], by_name["run publish"]
    assert publish_run.parent is not None
    assert publish_run.parent.span_id == train_run.context.span_id
    assert first.detail["traceparent"].split("-")[2] == f"{train_run.context.span_id:016x}"
    for name in ("step register", "step announce", "await review", "compensate register",
                 "run compensated"):
        assert by_name[name].parent.span_id == publish_run.context.span_id, name
    assert by_name["step announce"].status.status_code == trace.StatusCode.ERROR
    assert by_name["step announce"].attributes["concordia.attempt"] == 1
    # The awaited event's own span is linked.
    assert [link.context.span_id for link in by_name["await review"].links] == [
        train_run.context.span_id]


def test_no_tracer_provider_no_spans_and_no_traceparent(tmp_path: Path) -> None:
    defs = catalog(tmp_path)
    bus = InMemoryBus()
    with Engine(defs, registry(), "memory://", clock=VirtualClock(), bus=bus) as engine:
        run = engine.start("train", {"job": "j2"})
        engine.run_until_idle()
        assert "traceparent" not in engine.get_run(run.id).history[0].detail
    assert all("traceparent" not in e for e in bus.published)


def test_each_fan_out_item_attempt_and_compensation_is_a_span(
        tmp_path: Path, spans: InMemorySpanExporter) -> None:
    (tmp_path / "fan.yaml").write_text(textwrap.dedent("""
        name: fan
        version: 1
        input_schema: {items: {type: list, required: true}}
        steps:
          - name: each
            action: lab.each
            compensate: lab.undo_each
            for_each: input.items
          - name: last
            action: lab.last
            compensate: none
            reason: it only fails
    """).lstrip())
    reg = Registry()
    reg.add_action("lab.each", lambda ctx: {"item": ctx.item})
    reg.add_compensation("lab.undo_each", lambda ctx: None)

    def last(ctx: Any) -> None:
        raise PermanentError("no")

    reg.add_action("lab.last", last)
    with Engine(Catalog.load_strict([str(tmp_path)]), reg, "memory://",
                clock=VirtualClock()) as engine:
        run = engine.start("fan", {"items": ["a", "b"]})
        engine.run_until_idle()
        assert engine.get_run(run.id).status == "compensated"
    names = sorted(s.name for s in spans.get_finished_spans()
                   if s.name.startswith(("step each", "compensate each")))
    assert names == ["compensate each[0]", "compensate each[1]", "step each[0]",
                     "step each[1]"]
