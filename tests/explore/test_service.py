"""The failure map over HTTP, as the saga's page reads it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from concordia.definitions.catalog import Catalog
from concordia.runtime.aengine import AsyncEngine
from concordia.service.app import create_app
from concordia.service.state import ServiceOptions
from tests.conftest import DEFINITIONS, POLICIES
from tests.explore.conftest import plain_registry
from tests.service.conftest import READER, bearer, credentials

fastapi_testclient = pytest.importorskip("fastapi.testclient")


@pytest.fixture
def client() -> Iterator[object]:
    catalog = Catalog.load_strict([DEFINITIONS, POLICIES])
    engine = AsyncEngine(catalog, plain_registry(catalog), "memory://")
    app = create_app(engine, ServiceOptions(worker=False, credentials=credentials()))
    # a reader's token: the failure map is a read
    with fastapi_testclient.TestClient(app, base_url="http://127.0.0.1",
                                       headers=bearer(READER)) as test_client:
        yield test_client


def test_the_failure_points_of_a_saga(client: object) -> None:
    answer = client.get("/sagas/user_provisioning/failure-map")  # type: ignore[attr-defined]
    assert answer.status_code == 200
    body = answer.json()
    assert (body["saga"], body["version"], body["paths"]) == ("user_provisioning", 1, 49)
    assert body["violations"] == []
    point = next(p for p in body["points"] if p["step"] == "create_default_community"
                 and p["ends"] == "compensated")
    assert point["compensates"][-1] == "create_user"
    assert {"effect": "send_magic_link", "kind": "declared", "reason": (
        "a sent email cannot be recalled; revoking the token (generate_magic_link) makes "
        "the link useless")} in point["left_in_place"]


def test_a_failure_point_drawn(client: object) -> None:
    body = client.get("/sagas/upm_activation/failure-map?items=2").json()  # type: ignore[attr-defined]
    number = next(p["point"] for p in body["points"] if p["ends"] == "compensated")
    svg = client.get(  # type: ignore[attr-defined]
        f"/sagas/upm_activation/failure-map/{number}?items=2&format=svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "mark-undone" in svg.text
    whole = client.get("/sagas/upm_activation/failure-map/0?format=mermaid")  # type: ignore[attr-defined]
    assert whole.text.startswith("flowchart TD")


def test_unknown_sagas_and_points_are_404(client: object) -> None:
    assert client.get("/sagas/nope/failure-map").status_code == 404  # type: ignore[attr-defined]
    assert client.get(  # type: ignore[attr-defined]
        "/sagas/cerebros_nas/failure-map/9999").status_code == 404
    assert client.get(  # type: ignore[attr-defined]
        "/sagas/cerebros_nas/failure-map?faults=3").status_code == 400


def test_the_page_loads_the_failure_map_script(client: object) -> None:
    page = client.get("/ui/sagas/cerebros_nas")  # type: ignore[attr-defined]
    assert '<script src="/ui/static/failure_map.js" defer></script>' in page.text
    script = client.get("/ui/static/failure_map.js")  # type: ignore[attr-defined]
    assert script.status_code == 200
    assert "concordia:saga-page" in script.text
    app_js = (Path(__file__).parents[2] / "engine" / "concordia" / "service" / "static"
              / "app.js").read_text()
    assert 'new CustomEvent("concordia:saga-page"' in app_js
