"""`concordia run`, `inspect`, `runs` and `graph` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concordia.cli import main
from tests.conftest import DEFINITIONS, POLICIES

SAGA = """
name: checkout
version: 1
steps:
  - name: reserve
    action: cli_demo.reserve
    compensate: cli_demo.release
  - name: charge
    action: cli_demo.charge
    compensate: none
    reason: the last step
"""

HANDLERS = '''
from concordia import Registry

registry = Registry()

@registry.action("cli_demo.reserve")
def reserve(ctx):
    return {"reservation": "r-" + ctx.input["order_id"]}

@registry.compensation("cli_demo.release")
def release(ctx):
    return {"released": ctx.result["reservation"]}

@registry.action("cli_demo.charge")
def charge(ctx):
    if ctx.input.get("declined"):
        raise ValueError("card declined")
    return {"charged": True}
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "sagas" / "checkout.yaml").write_text(SAGA)
    (tmp_path / "cli_handlers_mod.py").write_text(HANDLERS)
    (tmp_path / "ok.json").write_text('{"order_id": "o-1"}')
    (tmp_path / "declined.json").write_text('{"order_id": "o-2", "declined": true}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


def test_run_inspect_runs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{project / 'runs.db'}"
    common = ["--store", store, "--definitions", "definitions"]
    code, out = _run(["run", "checkout", "--input", "ok.json", "--handlers",
                      "cli_handlers_mod", *common], capsys)
    assert code == 0
    assert "completed" in out
    code, out = _run(["run", "checkout", "--input", "declined.json", "--handlers",
                      "cli_handlers_mod", *common], capsys)
    assert code == 1
    assert "compensated" in out
    assert "card declined" in out
    code, out = _run(["runs", "--status", "compensated", "--format", "json", *common], capsys)
    assert code == 0
    assert [r["status"] for r in json.loads(out)] == ["compensated"]
    code, out = _run(["runs", *common], capsys)
    assert code == 0
    assert "Runs in" in out
    code, out = _run(["runs", "--format", "json", *common], capsys)
    listed = json.loads(out)
    assert [r["status"] for r in listed] == ["completed", "compensated"]
    run_ids = [r["id"] for r in listed]
    code, out = _run(["inspect", run_ids[1], "--format", "json", *common], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "compensated"
    reserve = data["steps"][0]
    assert reserve["name"] == "reserve"
    assert reserve["result"] == {"reservation": "r-o-2"}
    assert reserve["compensation"] == "succeeded"
    kinds = [h["kind"] for h in data["history"]]
    assert kinds.index("step.failed") < kinds.index("compensation.succeeded")


def test_inspect_unknown_run_is_a_usage_error(project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{project / 'r.db'}"
    assert main(["run", "checkout", "--input", "ok.json", "--handlers", "cli_handlers_mod",
                 "--store", store, "-q"]) == 0
    capsys.readouterr()
    code = main(["inspect", "nope", "--store", store])
    assert code == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err
    assert "Traceback" not in err


def test_run_with_unbound_handlers_names_them(project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (project / "empty_handlers_mod.py").write_text(
        "from concordia import Registry\nregistry = Registry()\n")
    code = main(["run", "checkout", "--input", "ok.json", "--handlers", "empty_handlers_mod",
                 "--store", "memory://", "--definitions", "definitions"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cli_demo.reserve" in err
    assert "cli_demo.release" in err


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_of_the_machine(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["graph", "cerebros_nas", "--format", fmt, "--detail", "machine",
                 "--definitions", DEFINITIONS, POLICIES])
    out = capsys.readouterr().out
    assert code == 0
    for state in ("run_0", "run_3", "undo_1", "completed", "compensated",
                  "compensation_failed", "failed", "cancelled"):
        assert state in out
    assert "await_completion" in out


def test_graph_highlights_a_runs_state(project: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{project / 'runs.db'}"
    main(["run", "checkout", "--input", "declined.json", "--handlers", "cli_handlers_mod",
          "--store", store, "--definitions", "definitions"])
    capsys.readouterr()
    main(["runs", "--format", "json", "--store", store, "--definitions", "definitions"])
    run_id = json.loads(capsys.readouterr().out)[0]["id"]
    code = main(["graph", "checkout", "--run", run_id, "--store", store, "--detail",
                 "machine"])
    graph = capsys.readouterr().out
    assert code == 0
    assert "class compensated current" in graph


def test_worker_drives_runs_started_elsewhere_and_stops_on_sigterm(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import subprocess
    import sys
    import time

    from concordia import Engine
    from concordia.definitions import Catalog
    from concordia.registry import load_registry

    store = f"sqlite:///{project / 'runs.db'}"
    engine = Engine(Catalog.load_strict(["definitions"]), load_registry("cli_handlers_mod"),
                    store)
    run = engine.start("checkout", {"order_id": "o-9"})
    engine.close()
    env = {**os.environ, "PYTHONPATH": str(project)}
    proc = subprocess.Popen([sys.executable, "-m", "concordia.cli", "worker", "--handlers",
                             "cli_handlers_mod", "--store", store, "--definitions",
                             "definitions", "--poll-interval", "0.05"], cwd=project, env=env)
    try:
        deadline = time.monotonic() + 30
        status = "running"
        while time.monotonic() < deadline:
            check = Engine(Catalog.load_strict(["definitions"]),
                           load_registry("cli_handlers_mod"), store)
            status = check.get_run(run.id).status
            check.close()
            if status == "completed":
                break
            time.sleep(0.1)
        assert status == "completed"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
