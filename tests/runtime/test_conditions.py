"""Conditional steps (``if``), run on every engine and store: a false condition skips the
step (journaled as skipped, never compensated), a true one runs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError
from concordia.runtime.engine import Engine
from tests.runtime.sagas import Recorder, action, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]
STEPS = ["reserve", "upgrade", "charge", "ship"]


def conditional(catalog_of: CatalogOf, condition: str, **extra: Any) -> Catalog:
    return catalog_of(saga("order", [
        action("reserve", **({"if": extra.pop("first")} if "first" in extra else {})),
        action("upgrade", **{"if": condition}),
        action("charge"),
        action("ship", **extra),
    ]))


@pytest.mark.parametrize(("vip", "ran"), [(True, STEPS), (False, ["reserve", "charge",
                                                                   "ship"])])
def test_a_condition_decides_whether_the_step_runs(
        vip: bool, ran: list[str], catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS)
    engine = engine_for(conditional(catalog_of, "input.vip"), rec.registry)
    run = engine.start("order", {"vip": vip})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ran
    upgrade = view.step("upgrade")
    assert upgrade.status == ("succeeded" if vip else "skipped")
    assert ("upgrade" in view.results) is vip
    kind = "step.ready" if vip else "step.skipped"
    [line] = [h for h in view.history if h.kind == kind]
    assert (line.step, line.detail) == ("upgrade", {"condition": "input.vip"})
    # The steps after it saw its result only when it ran.
    assert [sorted(c["results"]) for c in rec.of("action", "charge")] == [
        ["reserve", "upgrade"] if vip else ["reserve"]]


def test_a_skipped_step_is_never_compensated(catalog_of: CatalogOf,
                                             engine_for: EngineFor) -> None:
    def ship(ctx: Any) -> Any:
        raise PermanentError("no courier")

    rec = Recorder(STEPS, behaviours={"ship": ship})
    engine = engine_for(conditional(catalog_of, "input.vip"), rec.registry)
    run = engine.start("order", {"vip": False})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert rec.compensations() == ["charge", "reserve"]
    assert view.step("upgrade").comp_status is None


def test_a_condition_reads_earlier_results(catalog_of: CatalogOf,
                                           engine_for: EngineFor) -> None:
    def reserve(ctx: Any) -> Any:
        return {"stock": ctx.input["stock"]}

    rec = Recorder(STEPS, behaviours={"reserve": reserve})
    engine = engine_for(conditional(catalog_of, "results.reserve.stock > 10"), rec.registry)
    low = engine.start("order", {"stock": 3})
    high = engine.start("order", {"stock": 30})
    engine.run_until_idle()
    assert engine.get_run(low.id).step("upgrade").status == "skipped"
    assert engine.get_run(high.id).step("upgrade").status == "succeeded"


def test_the_first_step_may_be_conditional(catalog_of: CatalogOf,
                                           engine_for: EngineFor) -> None:
    rec = Recorder(STEPS)
    engine = engine_for(conditional(catalog_of, "true", first="input.hold"), rec.registry)
    run = engine.start("order", {"hold": False})
    # The creating commit does not mark a conditional first step started.
    assert run.step("reserve").status == "pending"
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ["upgrade", "charge", "ship"]


def test_a_condition_that_is_not_a_boolean_fails_the_step_at_once(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    rec = Recorder(STEPS)
    engine = engine_for(conditional(catalog_of, "input.level"), rec.registry)
    run = engine.start("order", {"level": "gold"})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    upgrade = view.step("upgrade")
    assert upgrade.status == "failed"
    assert upgrade.attempt == 0  # the handler never ran
    assert "gives str, not a boolean" in (upgrade.error or "")
    assert rec.actions() == ["reserve"]


def test_conditional_steps_in_a_parallel_stage(catalog_of: CatalogOf,
                                               engine_for: EngineFor) -> None:
    rec = Recorder(["a", "b", "c", "d"])
    catalog = catalog_of(saga("par", [
        action("a"),
        action("b", depends_on=["a"], **{"if": "input.b"}),
        action("c", depends_on=["a"], **{"if": "input.c"}),
        action("d", depends_on=["b", "c"]),
    ]))
    engine = engine_for(catalog, rec.registry)
    run = engine.start("par", {"b": True, "c": False})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert rec.actions() == ["a", "b", "d"]
    assert [view.step(n).status for n in "abcd"] == ["succeeded", "succeeded", "skipped",
                                                      "succeeded"]
