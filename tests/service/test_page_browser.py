"""The page in a real headless browser (Debian's chromium, driven by selenium through its
chromedriver): the run list, a compensated run with its diagram and timeline, a saga.

Screenshots are saved as test artefacts under ``test-artifacts/service-page/`` (or
``$CONCORDIA_ARTIFACTS/service-page/``). Without chromium the test is skipped, except
where ``CONCORDIA_REQUIRE_BROWSER=1`` (CI) says the browser must be there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ADMIN, ROOT_DIR, Served, ThreadedServer, client, make_app

CHROMIUM = os.environ.get("CONCORDIA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CONCORDIA_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("CONCORDIA_ARTIFACTS", ROOT_DIR / "test-artifacts")
                 ) / "service-page"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1500,1300")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CONCORDIA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is missing; "
                        ".ci/run installs them (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, css: str, count: int = 1, timeout: float = 20) -> list[Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    found: list[Any] = []

    def enough(d: Any) -> bool:
        found[:] = d.find_elements(By.CSS_SELECTOR, css)
        return len(found) >= count

    WebDriverWait(driver, timeout).until(enough)
    return found


def _shot(driver: Any, name: str) -> Path:
    """The whole page (not only the window) as a PNG artefact, through DevTools."""
    import base64

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000
    return path


def test_the_page_shows_runs_and_a_compensated_run_as_a_picture(browser: Any,
                                                                tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}")
    with ThreadedServer(app) as url, client(url) as http:
        served = Served(url, engine, http, "")  # for starting and settling only
        done = served.start("order", {"order_id": "b-1"}, correlation_id="corr-done")
        undone = served.start("order", {"order_id": "b-2", "fail_at": "ship"},
                              correlation_id="corr-undone")
        waiting = served.start("payment", {"order_id": "b-3"})
        for run in (done, undone, waiting):
            served.settle(run["id"])

        # Without a token the page asks for one; a wrong one is refused, saying so.
        browser.get(url + "/ui/")
        field = _wait(browser, "#token-form #token-input")[0]
        field.send_keys("wrong-0123456789abcdef0123456789abcdef")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        assert "refused" in _wait(browser, "#token-error")[0].text
        _shot(browser, "00-token.png")
        field = browser.find_element(By.ID, "token-input")
        field.send_keys(ADMIN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        rows = _wait(browser, "#runs tr[data-status]", 3)
        # Kept for this tab only, and never as a cookie.
        assert browser.get_cookies() == []
        assert browser.execute_script(
            "return sessionStorage.getItem('concordia.token')") == ADMIN
        refused = browser.get_log("browser")  # the calls made before it had the token
        assert all("401 (Unauthorized)" in e["message"] for e in refused), refused
        assert {r.get_attribute("data-status") for r in rows} == {"completed", "compensated",
                                                                  "suspended"}
        _shot(browser, "01-runs.png")
        Select(browser.find_element(By.ID, "filter-status")).select_by_value("compensated")
        _wait(browser, f"#run-{undone['id']}")
        rows = _wait(browser, "#runs tr[data-status]")
        assert [r.get_attribute("data-status") for r in rows] == ["compensated"]
        _shot(browser, "02-runs-compensated.png")

        browser.find_element(By.CSS_SELECTOR, f"#run-{undone['id']} a").click()
        _wait(browser, "#diagram svg")
        taken = _wait(browser, "#diagram path.taken", 5)
        kinds = sorted(p.get_attribute("class").split()[-1] for p in taken)
        assert kinds == ["fail", "next", "next", "next", "undo", "undo"]
        faint = browser.find_elements(By.CSS_SELECTOR, "#diagram path.edge:not(.taken)")
        assert faint
        assert all(p.get_attribute("stroke") == "#c8c8c8" for p in faint)
        current = browser.find_element(By.CSS_SELECTOR, "#diagram g.current")
        assert current.get_attribute("id") == "compensated"
        undone_nodes = browser.find_elements(By.CSS_SELECTOR, "#diagram g.mark-undone")
        assert sorted(g.get_attribute("id") for g in undone_nodes) == ["undo_charge",
                                                                       "undo_reserve"]
        entries = _wait(browser, "#timeline tr.timeline-entry", 10)
        kinds = [e.get_attribute("data-kind") for e in entries]
        assert "step.failed" in kinds
        assert kinds.count("compensation.succeeded") == 2
        assert kinds[-1] == "run.compensated"
        failed = browser.find_element(By.CSS_SELECTOR, "#timeline tr[data-kind='step.failed']")
        assert "ship refused for order b-2" in failed.text
        assert browser.find_element(By.ID, "correlation").text == "corr-undone"
        assert "compensated" in browser.find_element(By.ID, "run-status").text
        _shot(browser, "03-run-compensated.png")

        browser.get(f"{url}/ui/runs/{waiting['id']}")
        _wait(browser, "#diagram g.current")
        assert browser.find_element(By.CSS_SELECTOR, "#diagram g.current").get_attribute(
            "id") == "step_await_settlement"
        _shot(browser, "04-run-suspended.png")

        browser.get(url + "/ui/sagas/order")
        yaml_text = _wait(browser, "#yaml")[0].text
        assert yaml_text.startswith("name: order")
        assert "compensate: shop.refund" in yaml_text
        _wait(browser, "#diagram svg g#undo_charge")
        _shot(browser, "05-saga-order.png")
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == []


def test_a_compensated_fan_out_run_fits_1280_pixels_and_speaks_in_step_names(
        browser: Any, tmp_path: Path) -> None:
    import re

    from selenium.webdriver.common.by import By

    internal = re.compile(r"\b(?:run|undo)_\d+\b")
    app, engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}", fanout=True)
    with ThreadedServer(app) as url, client(url) as http:
        served = Served(url, engine, http, "")
        # an order id with no place to break a line, carried into the error message
        order = "order-" + "0123456789abcdef" * 8
        started = served.start("bundle", {"order_id": order, "items": ["a", "b", "c"],
                                          "fail_at": "dispatch"},
                               correlation_id="corr-" + "x" * 150)
        run = served.settle(started["id"], lambda r: r["status"] == "compensated")
        assert [s["name"] for s in run["steps"]][:4] == ["pack_items", "pack_items[0]",
                                                        "pack_items[1]", "pack_items[2]"]
        (child,) = [r for r in http.get("/runs").json()["runs"] if r["parent_run_id"]]
        for shown in (run, http.get(f"/runs/{child['id']}").json(),
                      http.get("/runs").json()):
            assert internal.findall(str(shown)) == [], internal.findall(str(shown))
        assert run["state"] == "compensated"
        moves = [(h["detail"]["from"], h["detail"]["to"]) for h in run["history"]
                 if h["kind"] == "state"]
        assert moves[-2:] == [("undo pay_order", "undo pack_items"),
                              ("undo pack_items", "compensated")]

        browser.set_window_size(1280, 900)
        browser.get(f"{url}/ui/runs/{started['id']}#token={ADMIN}")
        _wait(browser, "#diagram svg")
        _wait(browser, "#timeline tr.timeline-entry", 10)
        undone = browser.find_elements(By.CSS_SELECTOR, "#diagram g.mark-undone")
        assert sorted(g.get_attribute("id") for g in undone) == ["undo_pack_items",
                                                                "undo_pay_order"]
        taken = browser.find_elements(By.CSS_SELECTOR, "#diagram path.taken.undo")
        assert len(taken) == 2  # undo pay_order -> undo pack_items -> compensated
        text = browser.execute_script("return document.body.textContent")
        assert internal.findall(text) == []
        assert order in browser.find_element(By.ID, "steps").text
        _shot(browser, "06-run-fan-out-1280.png")
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, "
            "document.documentElement.clientWidth]")
        assert width[0] <= width[1], width
        browser.get(f"{url}/ui/")
        _wait(browser, "#runs tr[data-status]", 2)
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, "
            "document.documentElement.clientWidth]")
        assert width[0] <= width[1], width
        _shot(browser, "07-runs-1280.png")
