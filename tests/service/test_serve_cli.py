"""``concordia serve`` as a user runs it: the demo's runs on the page, and the README's
``curl`` of the Cerebros bridge's signed completion event resuming an awaiting NAS run."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ROOT_DIR

pytestmark = pytest.mark.slow
SECRET = "cerebros-bridge-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_block(section: str, lang: str) -> str:
    text = (ROOT_DIR / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(rf"```{lang}\n(.*?)```", text[start:end if end >= 0 else None],
                        re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def served_demo(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """The demo's runs in a SQLite store, served by ``concordia serve`` (a process)."""
    bin_dir = Path(sys.executable).parent
    store = f"sqlite:///{tmp_path / 'concordia.db'}"
    demo = subprocess.run([sys.executable, "-m", "thunderline.demo", "--store", store,
                           "--world", str(tmp_path / "world-demo.db")],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    # each scenario of the demo starts one run; the demo says how many it ran
    held = re.search(r"(\d+)/(\d+) scenarios held every invariant", demo.stdout)
    assert held is not None, demo.stdout[-2000:]
    assert held[1] == held[2], demo.stdout[-2000:]
    port = _free_port()
    env = {**os.environ, "CONCORDIA_WEBHOOK_SECRETS": SECRET,
           "THUNDERLINE_DB": str(tmp_path / "world.db")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen([str(bin_dir / "concordia"), "serve", "--store", store,
                             "--handlers", "thunderline.handlers", "--port", str(port)],
                            cwd=ROOT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "concordia serve did not become ready"
            time.sleep(0.1)
        yield base, tmp_path, int(held[2])
    finally:
        proc.terminate()
        status = proc.wait(30)
        log.close()
        # uvicorn stops gracefully on SIGTERM, then ends by the signal it was sent
        output = (tmp_path / "serve.log").read_text()
        assert status in (0, -15), output
        assert "Traceback" not in output, output


def test_serve_shows_the_demo_and_a_signed_curl_resumes_an_awaiting_nas_run(
        served_demo: tuple[str, Path, int]) -> None:
    base, _, demo_runs = served_demo
    with httpx.Client(base_url=base, timeout=30) as client:
        _curl_flow(base, client, demo_runs)


def _curl_flow(base: str, client: httpx.Client, demo_runs: int) -> None:
    listed = client.get("/runs", params={"limit": 100}).json()["runs"]
    assert len(listed) == demo_runs
    assert {r["saga"] for r in listed} == {
        "cerebros_nas", "upm_activation", "user_provisioning"}
    assert client.get("/ui/").status_code == 200
    assert client.get(listed[0]["links"]["graph"]).text.startswith("<svg")
    nas = client.post("/runs", json={"saga": "cerebros_nas", "input": {
        "search_space": "resnet-small", "trials": 2, "dataset": "cifar-10"}}).json()
    deadline = time.monotonic() + 30
    while (run := client.get(f"/runs/{nas['id']}").json())["status"] != "suspended":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run["state"] == "run_2"
    model_run_id = run["steps"][0]["result"]["run_id"]
    if shutil.which("openssl") is None or shutil.which("curl") is None:
        pytest.fail("the README's flow needs curl and openssl")
    script = readme_block("Serving", "bash").replace("http://127.0.0.1:8080", base)
    posted = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "SECRET": SECRET,
                                 "MODEL_RUN_ID": model_run_id})
    assert posted.returncode == 0, posted.stderr
    answer = httpx.Response(202, content=posted.stdout).json()
    assert answer["resumed"] == [nas["id"]], posted.stdout
    deadline = time.monotonic() + 30
    while (run := client.get(f"/runs/{nas['id']}").json())["status"] != "completed":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    announced = [e for e in run["events"] if e["event"]["type"] == "ml.run.completed"]
    assert [c["type"] for c in announced[0]["causation_chain"]] == [
        "ml.training.completed", "ml.run.completed"]
    replay = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace(
        "curl -sS", "curl -sS -o /dev/null -w '%{http_code}'")], capture_output=True,
        text=True, timeout=60, env={**os.environ, "SECRET": "wrong-secret-0123456789",
                                    "MODEL_RUN_ID": model_run_id})
    assert replay.stdout == "401"
