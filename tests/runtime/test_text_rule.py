"""One rule for journaled strings, on every store and both engines: no NUL, no lone
surrogate, bounded identifiers (see :func:`concordia.values.text_fault`).

Values that break it are refused where they enter (a run's input or ids, an event, a
cancellation's reason, a handler's result) with the same error on memory, SQLite and
PostgreSQL; a handler whose error message quotes such text fails its attempt like any
other failure, with the text cleaned, and never loops a run (PostgreSQL used to refuse the
commit that recorded the failure, and the worker tried the step again for ever).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.errors import EventError, InputError, UnknownRunError, ValueLimitError
from concordia.events.envelope import new_event
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from tests.runtime.sagas import action, saga

EngineFor = Callable[..., Engine]
UNFIT = ["a\x00b", "caf\udce9", "\x00"]


@pytest.fixture
def catalog(catalog_of: Callable[..., Catalog]) -> Catalog:
    return catalog_of(saga("pair", [action("one"), action("two")],
                           input_schema={"text": {"type": "string"}}))


def registry_with(two: Callable[[Any], Any], calls: list[str]) -> Registry:
    registry = Registry()

    def one(ctx: Any) -> dict[str, Any]:
        calls.append("one")
        return {"ok": True}

    def counted_two(ctx: Any) -> Any:
        calls.append("two")
        return two(ctx)

    registry.add_action("one.do", one)
    registry.add_action("two.do", counted_two)
    registry.add_compensation("one.undo", lambda ctx: calls.append("undo one"))
    registry.add_compensation("two.undo", lambda ctx: calls.append("undo two"))
    return registry


@pytest.mark.parametrize("text", UNFIT)
def test_a_handler_error_quoting_unfit_text_fails_its_attempt_once(
        engine_for: EngineFor, catalog: Catalog, text: str) -> None:
    calls: list[str] = []

    def two(ctx: Any) -> Any:
        raise ValueError(f"cannot process {text}")

    engine = engine_for(catalog, registry_with(two, calls))
    run = engine.start("pair", {"text": "plain"})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated", view.error
    assert calls == ["one", "two", "undo one"]  # tried once (no retry policy), never looped
    assert view.error is not None
    assert "cannot process" in view.error
    assert "\x00" not in view.error
    assert "\ufffd" in view.error
    assert view.step("two").error_detail is not None
    assert "\ufffd" in view.step("two").error_detail["message"]


@pytest.mark.parametrize("text", UNFIT)
def test_a_result_holding_unfit_text_fails_the_step_without_retry(
        engine_for: EngineFor, catalog: Catalog, text: str) -> None:
    calls: list[str] = []
    engine = engine_for(catalog, registry_with(lambda ctx: {"out": [text]}, calls))
    run = engine.start("pair", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert calls == ["one", "two", "undo one"]
    assert "ValueLimitError" in (view.step("two").error or "")
    assert "/out/0" in (view.step("two").error or "")


@pytest.mark.parametrize("text", UNFIT)
@pytest.mark.parametrize("field", ["input", "correlation_id", "causation_id", "run_id"])
def test_a_run_is_refused_unfit_text_before_anything_is_written(
        engine_for: EngineFor, catalog: Catalog, text: str, field: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    kwargs: dict[str, Any] = {"input": {"text": "plain"}}
    if field == "input":
        kwargs["input"] = {"text": text}
    else:
        kwargs[field] = text
    with pytest.raises(InputError) as caught:
        engine.start("pair", **kwargs)
    assert caught.value.field == ("/text" if field == "input" else field)
    assert engine.list_runs() == []


@pytest.mark.parametrize("field", ["correlation_id", "causation_id", "run_id"])
def test_identifiers_are_bounded(engine_for: EngineFor, catalog: Catalog, field: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    with pytest.raises(InputError, match="longer than 256"):
        engine.start("pair", {}, **{field: "x" * 257})
    engine.start("pair", {}, **{field: "x" * 256})  # the bound itself is fine


@pytest.mark.parametrize("text", UNFIT)
def test_lookups_of_unfit_ids_find_nothing(engine_for: EngineFor, catalog: Catalog,
                                           text: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    engine.start("pair", {})
    with pytest.raises(UnknownRunError):
        engine.get_run(text)
    with pytest.raises(UnknownRunError):
        engine.resolve_run_id(text)
    with pytest.raises(UnknownRunError):
        engine.retry(text)
    assert engine.list_runs(saga=text) == []
    assert engine.list_runs(status=text) == []


@pytest.mark.parametrize("text", UNFIT)
def test_a_cancellation_reason_is_journaled_text(engine_for: EngineFor, catalog: Catalog,
                                                 text: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    run = engine.start("pair", {})
    with pytest.raises(ValueLimitError):
        engine.cancel(run.id, f"because {text}")
    assert engine.get_run(run.id).status == "running"  # not asked to cancel


@pytest.mark.parametrize("attribute", ["source", "subject", "correlationid", "causationid",
                                       "traceparent"])
@pytest.mark.parametrize("text", [*UNFIT, "x" * 1025])
def test_an_event_is_refused_unfit_attributes(engine_for: EngineFor, catalog: Catalog,
                                              attribute: str, text: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    event = new_event("pair.started", {}, source="urn:test").to_dict()
    event[attribute] = text
    with pytest.raises(EventError) as caught:
        engine.deliver(event)
    assert attribute in str(caught.value)


@pytest.mark.parametrize("text", UNFIT)
def test_event_data_is_journaled_text(engine_for: EngineFor, catalog: Catalog,
                                      text: str) -> None:
    engine = engine_for(catalog, registry_with(lambda ctx: {}, []))
    event = new_event("pair.started", {"note": text}, source="urn:test").to_dict()
    with pytest.raises(EventError, match="at /note") as caught:
        engine.deliver(event)
    assert caught.value.field == "data/note"
