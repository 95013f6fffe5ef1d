"""``concordia serve`` as a user runs it: the demo's runs on the page, the README's
``curl`` of the Cerebros bridge's signed completion event resuming an awaiting NAS run,
and the token a server on loopback without credentials makes for itself."""

from __future__ import annotations

import base64
import json
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

from tests.service.conftest import DEFINITIONS, ROOT_DIR

pytestmark = pytest.mark.slow
SECRET = "cerebros-bridge-secret-0123456789"
TOKEN = "operator-token-0123456789abcdef0123456789"
WHSEC = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocks(section: str, lang: str, page: str = "README.md") -> list[str]:
    text = (ROOT_DIR / page).read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{lang}\n(.*?)```", text[start:end if end >= 0 else None],
                      re.DOTALL)


def readme_block(section: str, lang: str) -> str:
    (block,) = blocks(section, lang)
    return block


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
    env = {**os.environ, "CONCORDIA_WEBHOOK_SECRETS": f"{SECRET},{WHSEC}",
           "CONCORDIA_API_TOKENS": f"ops:concordia.read,concordia.operate:{TOKEN}",
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
    assert httpx.get(base + "/runs").status_code == 401
    with httpx.Client(base_url=base, timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        _curl_flow(base, client, demo_runs)
        _securing_flow(base, client)


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
    assert run["state"] == "await_completion"
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


def _securing_flow(base: str, client: httpx.Client) -> None:
    """docs/operations.md's "Securing the API" examples, as written: a token reads and
    starts a NAS run; a Standard Webhooks sender's signed completion event resumes it."""
    token_block, sender_block = blocks("Securing the API", "bash", "docs/operations.md")
    env = {**os.environ, "API": base, "TOKEN": TOKEN}
    called = subprocess.run(["bash", "-euo", "pipefail", "-c", token_block],
                            capture_output=True, text=True, timeout=60, env=env)
    assert called.returncode == 0, called.stderr
    decoder = json.JSONDecoder()
    listed, end = decoder.raw_decode(called.stdout)
    started, _ = decoder.raw_decode(called.stdout[end:].lstrip())
    assert len(listed["runs"]) == 5
    assert (started["saga"], started["status"]) == ("cerebros_nas", "running")
    deadline = time.monotonic() + 30
    while (run := client.get(f"/runs/{started['id']}").json())["status"] != "suspended":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    model_run_id = run["steps"][0]["result"]["run_id"]
    sent = subprocess.run(["bash", "-euo", "pipefail", "-c", sender_block],
                          capture_output=True, text=True, timeout=60,
                          env={**env, "WHSEC": WHSEC, "MODEL_RUN_ID": model_run_id})
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["resumed"] == [started["id"]], sent.stdout


def test_serve_on_loopback_without_credentials_prints_the_one_token_it_takes(
        tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORDIA_")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "concordia"), "serve",
                             "--no-worker", "--store", "memory://", "--definitions",
                             DEFINITIONS, "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        lines = []
        while (line := proc.stdout.readline()) and "Ctrl-C to stop" not in line:
            lines.append(line)
        said = "".join(lines)
        found = re.search(r"this process's token \(concordia.read, concordia.operate\): "
                          r"(\S+) \(open the page as http://127.0.0.1:\d+/ui/#token=(\S+)\)",
                          said)
        assert found is not None, said
        assert found[1] == found[2]
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert httpx.get(base + "/runs").status_code == 401
        ok = httpx.get(base + "/runs", headers={"Authorization": f"Bearer {found[1]}"})
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
