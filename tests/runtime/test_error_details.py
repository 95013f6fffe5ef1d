"""Errors keep their details: type, title, status and details of a handler's error are
journaled with the step (bounded like every journaled value), shown by ``inspect``, and
passed to ``catch``; ``inspect`` also shows a run's child runs as a tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from concordia.cli import main
from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError, RetryableError
from concordia.runtime.engine import Engine
from concordia.runtime.kinds.children import child_run_id
from concordia.runtime.problem import MAX_DETAILS_BYTES, problem_of
from tests.runtime.sagas import Recorder, action, saga

EngineFor = Callable[..., Engine]
CatalogOf = Callable[..., Catalog]


class OutOfCredit(Exception):
    """An error of a service's own that describes itself (RFC 9457)."""

    def to_problem(self) -> dict[str, Any]:
        return {"type": "https://example.com/probs/out-of-credit", "title": "Not enough credit",
                "status": 403, "detail": "balance 30, cost 50", "balance": 30,
                "accounts": ["/account/12345"]}


class Refused(Exception):
    def __init__(self, message: str, details: Any) -> None:
        super().__init__(message)
        self.details = details


class BrokenProblem(Exception):
    def to_problem(self) -> dict[str, Any]:
        raise RuntimeError("cannot describe myself")


@pytest.mark.parametrize(("error", "expected"), [
    (PermanentError("Compliance Error", details={"rule": "kyc-3", "score": 0.41}, status=422,
                    type="https://errors.example/compliance", title="Compliance check failed"),
     {"type": "https://errors.example/compliance", "title": "Compliance check failed",
      "status": 422, "message": "Compliance Error", "details": {"rule": "kyc-3", "score": 0.41}}),
    (RetryableError("busy", details={"retry_after": 30}),
     {"type": "RetryableError", "title": "RetryableError", "status": None, "message": "busy",
      "details": {"retry_after": 30}}),
    (OutOfCredit(),
     {"type": "https://example.com/probs/out-of-credit", "title": "Not enough credit",
      "status": 403, "message": "balance 30, cost 50",
      "details": {"balance": 30, "accounts": ["/account/12345"]}}),
    (Refused("no", {"code": "E42"}),
     {"type": "Refused", "title": "Refused", "status": None, "message": "no",
      "details": {"code": "E42"}}),
    (BrokenProblem("odd"),
     {"type": "BrokenProblem", "title": "BrokenProblem", "status": None, "message": "odd",
      "details": None}),
    (PermanentError("x", status=9000, details=["not", "a", "mapping"]),
     {"type": "PermanentError", "title": "PermanentError", "status": None, "message": "x",
      "details": None}),
])
def test_problem_details_of_an_exception(error: BaseException, expected: dict[str, Any]
                                         ) -> None:
    assert problem_of(error) == expected


def test_details_beyond_the_limits_are_replaced_by_a_note() -> None:
    huge = problem_of(PermanentError("x", details={"blob": "y" * (MAX_DETAILS_BYTES + 1)}))
    assert huge["details"] == {"unavailable": "the details were not kept: larger than 64 KiB "
                                              "as JSON at /blob"}
    assert huge["message"] == "x"  # the failure itself is kept
    odd = problem_of(PermanentError("x", details={"when": object()}))
    assert odd["details"] == {"unavailable": "the details were not kept: object is not JSON "
                                             "data (expected an object, list, string, number, "
                                             "boolean or null) at /when"}
    nan = problem_of(PermanentError("x", details={"ratio": float("nan")}))
    assert "not a finite number" in nan["details"]["unavailable"]


def test_a_failed_step_journals_its_error_details(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def check(ctx: Any) -> Any:
        raise PermanentError("Compliance Error", details={"rule": "kyc-3"}, status=422)

    rec = Recorder(["open", "check"], behaviours={"check": check})
    engine = engine_for(catalog_of(saga("account", [action("open"), action("check")])),
                        rec.registry)
    run = engine.start("account", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    step = view.step("check")
    assert step.error == "PermanentError: Compliance Error"
    assert step.error_detail == {"type": "PermanentError", "title": "PermanentError",
                                 "status": 422, "message": "Compliance Error",
                                 "details": {"rule": "kyc-3"}}


def test_a_retried_step_that_succeeds_keeps_no_error(
        catalog_of: CatalogOf, engine_for: EngineFor) -> None:
    def check(ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise RetryableError("busy", details={"queue": 9})
        return {"ok": True}

    rec = Recorder(["check"], behaviours={"check": check})
    retry = {"attempts": 2, "backoff": {"initial": "1s", "jitter": 0}}
    engine = engine_for(catalog_of(saga("account", [action("check", retry=retry)])),
                        rec.registry)
    run = engine.start("account", {})
    engine.drain()
    step = engine.get_run(run.id).step("check")
    assert (step.status, step.error, step.error_detail) == ("succeeded", None, None)


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_inspect_shows_error_details_and_the_child_tree(
        catalog_of: CatalogOf, tmp_path: Path, clock: VirtualClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(ctx: Any) -> Any:
        raise PermanentError("Compliance Error", details={"rule": "kyc-3"}, status=422)

    catalog = catalog_of(
        saga("onboard", [action("open"), {"name": "verify", "saga": "kyc"},
                         action("welcome")]),
        saga("kyc", [action("collect"), action("screen")]))
    rec = Recorder(["open", "collect", "screen", "welcome"], behaviours={"screen": refuse})
    with Engine(catalog, rec.registry, _store(tmp_path), clock=clock) as engine:
        run = engine.start("onboard", {})
        engine.run_until_idle()
    child = child_run_id(run.id, "verify")

    assert main(["inspect", run.id, "--store", _store(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Child runs" in out
    assert f"verify -> kyc v1  {child}  compensated" in out
    assert "ChildSagaError" in out

    assert main(["inspect", child, "--store", _store(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{run.id} (step verify)" in out
    assert 'screen: PermanentError (422): Compliance Error {"rule": "kyc-3"}' in out

    assert main(["inspect", run.id, "--store", _store(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["children"] == [{"step": "verify", "run_id": child, "saga": "kyc",
                                 "version": 1, "status": "compensated", "children": []}]
    [verify] = [s for s in data["steps"] if s["name"] == "verify"]
    assert verify["error_detail"]["details"]["error"] == (
        "step screen: PermanentError: Compliance Error")

    assert main(["inspect", child, "--store", _store(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["parent_run_id"], data["parent_step"]) == (run.id, "verify")
    [screen] = [s for s in data["steps"] if s["name"] == "screen"]
    assert screen["error_detail"]["details"] == {"rule": "kyc-3"}


def test_inspect_lists_a_fan_outs_items(catalog_of: CatalogOf, tmp_path: Path,
                                        clock: VirtualClock,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    catalog = catalog_of(saga("sync", [action("each", for_each="input.names")]))
    rec = Recorder(["each"])
    with Engine(catalog, rec.registry, _store(tmp_path), clock=clock) as engine:
        run = engine.start("sync", {"names": ["a", "b", "c"]})
        engine.run_until_idle()
    assert main(["inspect", run.id, "--store", _store(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in data["steps"]] == ["each", "each[0]", "each[1]", "each[2]"]
    assert data["steps"][0]["items"] == ["a", "b", "c"]
    assert main(["inspect", run.id, "--store", _store(tmp_path)]) == 0
    assert "each[2]" in capsys.readouterr().out


def test_inspect_says_what_a_parent_waits_for(catalog_of: CatalogOf, tmp_path: Path,
                                              clock: VirtualClock,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    catalog = catalog_of(saga("onboard", [{"name": "verify", "saga": "kyc"}]),
                         saga("kyc", [action("collect")]))
    rec = Recorder(["collect"])
    with Engine(catalog, rec.registry, _store(tmp_path), clock=clock) as engine:
        run = engine.start("onboard", {})
        engine.advance(run.id)  # the parent only: the child has not run yet
    assert main(["inspect", run.id, "--store", _store(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    child = child_run_id(run.id, "verify")
    assert f"step verify waits for child saga kyc (run {child}) to end" in out
