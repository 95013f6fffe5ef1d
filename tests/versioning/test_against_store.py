"""``concordia validate --against-store``: before a deploy, a version edited in place that
runs are pinned to (the engine would refuse to start) and a removed version with runs
still in flight, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from concordia import Catalog, Engine, VirtualClock
from concordia.cli import main
from concordia.errors import DefinitionChangedError
from tests.pg import drop_schema, new_schema, schema_url
from tests.versioning.test_pinning import EVENTS, SAGA, _registry


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    schema = new_schema()
    yield schema_url(schema)
    drop_schema(schema)


def suspended_on_v1(tmp_path: Path, store: str, runs: int = 2) -> Path:
    """``runs`` runs of version 1 waiting for payment (in flight); one that ended."""
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "events.yaml").write_text(EVENTS)
    (defs / "fulfil_v1.yaml").write_text(SAGA.format(version=1, last="ship"))
    with Engine(Catalog.load_strict([str(defs)]), _registry([]), store,
                clock=VirtualClock()) as engine:
        for i in range(runs):
            engine.start("fulfil", {"order_id": f"o-{i}"})
        ended = engine.start("fulfil", {"order_id": "o-x"})
        engine.run_until_idle()
        engine.cancel(ended.id, "changed their mind")
    return defs


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["validate", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_version_edited_in_place_is_an_error_before_the_engine_refuses_it(
        tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    defs = suspended_on_v1(tmp_path, store_url)
    code, out = validate(capsys, str(defs), "--against-store", store_url)
    assert (code, out["count"]) == (0, 0)  # unchanged: nothing to say
    edited = SAGA.format(version=1, last="ship").replace("timeout: 1h", "timeout: 2h")
    (defs / "fulfil_v1.yaml").write_text(edited)
    code, out = validate(capsys, str(defs), "--against-store", store_url)
    assert code == 1
    [problem] = out["problems"]  # type: ignore[misc]
    assert problem["code"] == "pinned-definition-changed"
    assert problem["file"].endswith("fulfil_v1.yaml")
    assert "2 still in flight" in problem["message"]
    assert "step paid changed" in problem["message"]
    assert "version: 2" in problem["hint"]
    # What validate said is what the engine does at start-up.
    with pytest.raises(DefinitionChangedError):
        Engine(Catalog.load_strict([str(defs)]), _registry([]), store_url)


def test_a_removed_version_with_runs_in_flight_is_a_warning_or_an_error_if_unbound(
        tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    defs = suspended_on_v1(tmp_path, store_url, runs=3)
    (defs / "fulfil_v1.yaml").unlink()
    (defs / "fulfil_v2.yaml").write_text(SAGA.format(version=2, last="deliver"))
    code, out = validate(capsys, str(defs), "--against-store", store_url)
    assert code == 0
    [problem] = out["problems"]  # type: ignore[misc]
    assert (problem["code"], problem["severity"]) == ("removed-version-in-flight", "warning")
    assert "fulfil v1" in problem["message"]
    assert "3 run(s)" in problem["message"]
    code, out = validate(capsys, str(defs), "--against-store", store_url,
                         "--handlers", "tests.versioning.handlers_all")
    assert (code, [p["code"] for p in out["problems"]]) == (  # type: ignore[attr-defined]
        0, ["removed-version-in-flight"])
    code, out = validate(capsys, str(defs), "--against-store", store_url,
                         "--handlers", "tests.versioning.handlers_v2_only")
    assert code == 1
    [problem] = out["problems"]  # type: ignore[misc]
    assert problem["code"] == "removed-version-unbound"
    assert "shop.ship" in problem["message"]


def test_a_store_that_does_not_exist_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "events.yaml").write_text(EVENTS)
    code = main(["validate", str(defs), "--against-store", f"sqlite:///{tmp_path / 'no.db'}"])
    assert code == 2
    assert "no SQLite store" in capsys.readouterr().err
