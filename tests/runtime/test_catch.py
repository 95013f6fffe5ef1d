"""Error routing (``catch``), run on every engine and store: a caught error does not
compensate; the run goes on with the next step or jumps to a later one, and later steps
read the error as ``results.<step>.error``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError, RetryableError
from concordia.machine import compile_saga
from concordia.runtime.engine import Engine
from tests.runtime.sagas import Recorder, action, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]
STEPS = ["reserve", "book_hotel", "book_car", "notify", "confirm"]


class SeatsGone(PermanentError):
    """A domain error, caught by its name or its base class's."""


def booking(catalog_of: CatalogOf, catch: list[dict[str, Any]], **hotel: Any) -> Catalog:
    return catalog_of(saga("trip", [
        action("reserve"),
        action("book_hotel", catch=catch, **hotel),
        action("book_car"),
        action("notify"),
        action("confirm"),
    ]))


def failing_hotel(error: BaseException, checkpoint: bool = False) -> Callable[[Any], Any]:
    def hotel(ctx: Any) -> Any:
        if checkpoint:
            ctx.checkpoint({"hold": "h-7"})
        raise error
    return hotel


def test_a_caught_error_continues_with_the_next_step_and_compensates_nothing(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def notify(ctx: Any) -> Any:
        return {"told": ctx.results["book_hotel"]["error"]["message"],
                "fallback": ctx.results["book_hotel"]["hotel"]}

    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(SeatsGone("no rooms")),
                                      "notify": notify})
    catch = [{"errors": ["SeatsGone"], "result": {"hotel": "'none'"}}]
    engine = engine_for(booking(catalog_of, catch), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert view.error is None
    assert rec.compensations() == []
    assert rec.actions() == STEPS
    hotel = view.step("book_hotel")
    assert hotel.status == "caught"
    assert hotel.caught == 0
    assert hotel.result == {"hotel": "none", "error": {
        "type": "SeatsGone", "title": "SeatsGone", "status": None, "message": "no rooms",
        "details": None}}
    assert view.results["notify"] == {"told": "no rooms", "fallback": "none"}
    [line] = [h for h in view.history if h.kind == "step.caught"]
    assert (line.step, line.detail) == ("book_hotel", {"entry": 0, "goto": "continue",
                                                       "type": "SeatsGone"})


def test_a_caught_error_jumps_to_a_later_step_skipping_those_between(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(SeatsGone("no rooms"))})
    catch = [{"errors": ["PermanentError"], "goto": "notify"}]
    engine = engine_for(booking(catalog_of, catch), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ["reserve", "book_hotel", "notify", "confirm"]
    assert view.step("book_car").status == "skipped"
    moves = [h.detail["event"] for h in view.history if h.kind == "state"]
    assert moves == ["done", "goto_3", "done", "done"]


@pytest.mark.parametrize(("error", "errors"), [
    (SeatsGone("x"), ["SeatsGone"]),
    (SeatsGone("x"), ["PermanentError"]),  # a base class
    (SeatsGone("x"), [f"{__name__}.SeatsGone"]),  # module-qualified
    (PermanentError("x", status=409), [409]),
    (PermanentError("x", status=409), ["409"]),
    (PermanentError("x", type="https://errors.example/sold-out"),
     ["https://errors.example/sold-out"]),
    (PermanentError("x", title="Sold out"), ["Sold out"]),
    (KeyError("x"), ["*"]),
])
def test_entries_match_by_class_type_title_status_or_star(
        error: BaseException, errors: list[Any], catalog_of: CatalogOf,
        engine_for: EngineFor) -> None:
    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(error)})
    catch = [{"errors": ["SomethingElse", 500]}, {"errors": errors}]
    engine = engine_for(booking(catalog_of, catch), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert view.step("book_hotel").caught == 1


def test_without_a_matching_entry_the_step_fails_and_compensates(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(ValueError("bad date"))})
    catch = [{"errors": ["SeatsGone", 404]}]
    engine = engine_for(booking(catalog_of, catch), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert view.error == "step book_hotel: ValueError: bad date"
    assert view.step("book_hotel").status == "failed"
    assert view.step("book_hotel").caught is None
    assert rec.compensations() == ["reserve"]


def test_retries_are_spent_before_a_catch_entry_takes_the_error(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(RetryableError("busy"))})
    catch = [{"errors": ["RetryableError"]}]
    retry = {"attempts": 3, "backoff": {"initial": "1s", "jitter": 0}}
    engine = engine_for(booking(catalog_of, catch, retry=retry), rec.registry)
    run = engine.start("trip", {})
    engine.drain()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert [c["attempt"] for c in rec.of("action", "book_hotel")] == [1, 2, 3]
    assert view.step("book_hotel").status == "caught"


def test_a_caught_step_that_checkpointed_is_undone_if_the_run_fails_later(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def confirm(ctx: Any) -> Any:
        raise PermanentError("confirmation refused")

    rec = Recorder(STEPS, behaviours={
        "book_hotel": failing_hotel(SeatsGone("no rooms"), checkpoint=True),
        "confirm": confirm})
    engine = engine_for(booking(catalog_of, [{"errors": ["*"]}]), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert rec.compensations() == ["notify", "book_car", "book_hotel", "reserve"]
    [undo] = rec.of("compensation", "book_hotel")
    assert (undo["result"], undo["completed"]) == ({"hold": "h-7"}, False)


def test_a_catch_result_that_cannot_be_evaluated_leaves_the_step_failed(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS, behaviours={"book_hotel": failing_hotel(SeatsGone("no rooms"))})
    catch = [{"errors": ["*"], "result": {"code": "error.details.code"}}]
    engine = engine_for(booking(catalog_of, catch), rec.registry)
    run = engine.start("trip", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert "its catch result failed" in (view.step("book_hotel").error or "")
    assert rec.compensations() == ["reserve"]


def test_the_machine_and_its_diagram_show_the_jump(catalog_of: CatalogOf) -> None:
    compiled = compile_saga(booking(catalog_of, [{"errors": ["*"], "goto": "notify"}]
                                    ).saga("trip"))
    assert compiled.move("run_1", "goto_3") == "run_3"
    assert compiled.labels["run_1"] == "book_hotel!"
