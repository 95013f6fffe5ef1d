"""A small project in a temporary directory: a saga with an await, its events, handlers.

Every CLI test of the run commands works on a real SQLite file in the project's
directory, through the real command (``main([...])`` in-process or a subprocess).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from concordia.cli import main
from tests.conftest import ROOT

SAGA = """\
name: order
version: 1
trigger:
  event: shop.order.placed
defaults:
  retry: {attempts: 2, backoff: {initial: 50ms, max: 50ms, jitter: 0}}
  compensation_retry: {attempts: 2, backoff: {initial: 50ms, max: 50ms, jitter: 0}}
steps:
  - name: reserve
    action: ops_demo.reserve
    compensate: ops_demo.release
  - name: charge
    action: ops_demo.charge
    compensate: ops_demo.refund
  - name: wait_payment
    await: shop.payment.confirmed
    match: event.data.order_id == input.order_id
    timeout: 1h
  - name: ship
    action: ops_demo.ship
    compensate: none
    reason: the last step; nothing after it can fail
"""

EVENTS = """\
kind: events
events:
  - name: shop.order.placed
    version: 1
    reliability: persistent
    payload_schema: {order_id: {type: string, required: true}}
  - name: shop.payment.confirmed
    version: 1
    reliability: persistent
    payload_schema: {order_id: {type: string, required: true}}
"""

HANDLERS = '''\
import os

from concordia import Registry

registry = Registry()


@registry.action("ops_demo.reserve")
def reserve(ctx):
    return {"reservation": "r-" + ctx.input["order_id"]}


@registry.compensation("ops_demo.release")
def release(ctx):
    if os.path.exists("release.broken"):
        raise RuntimeError("warehouse offline")
    return {"released": ctx.result["reservation"]}


@registry.action("ops_demo.charge")
def charge(ctx):
    if ctx.input.get("declined"):
        raise ValueError("card declined")
    return {"charge": "ch-" + ctx.input["order_id"]}


@registry.compensation("ops_demo.refund")
def refund(ctx):
    return {"refunded": ctx.result["charge"]}


@registry.action("ops_demo.ship")
def ship(ctx):
    return {"shipped": True}
'''

_counter = itertools.count()


class Project:
    """The project directory, its store URL and helpers to run the CLI on it."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.db = root / "runs.db"
        self.store = f"sqlite:///{self.db}"
        self.capsys = capsys
        self.handlers = f"ops_handlers_{root.name.replace('-', '_')}"

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``concordia ARGS`` in-process; (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err, err
        return code, out, err

    def run(self, *extra: str, order: str = "o-1", **data: Any) -> tuple[int, str, str]:
        path = self.root / f"input-{next(_counter)}.json"
        path.write_text(json.dumps({"order_id": order, **data}))
        return self.cli("run", "order", "--input", str(path), "--handlers", self.handlers,
                        "--store", self.store, *extra)

    def event(self, type_: str, order: str, event_id: str | None = None) -> Path:
        path = self.root / f"event-{next(_counter)}.json"
        path.write_text(json.dumps({
            "specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "/shop",
            "type": type_, "time": "2026-11-29T10:00:00Z", "data": {"order_id": order}}))
        return path

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        args = ["runs", "--store", self.store, "--format", "json"]
        if status:
            args += ["--status", status]
        code, out, _ = self.cli(*args)
        assert code == 0
        listed: list[dict[str, Any]] = json.loads(out)
        return listed

    def subprocess(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), ROOT])}
        env.pop("CONCORDIA_HANDLERS", None)
        return subprocess.run([sys.executable, "-m", "concordia.cli", *args], cwd=self.root,
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False, **kwargs)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Project:
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "events").mkdir()
    (tmp_path / "definitions" / "sagas" / "order.yaml").write_text(SAGA)
    (tmp_path / "definitions" / "events" / "shop.yaml").write_text(EVENTS)
    proj = Project(tmp_path, capsys)
    (tmp_path / f"{proj.handlers}.py").write_text(HANDLERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("CONCORDIA_STORE", "CONCORDIA_HANDLERS", "CONCORDIA_DEFINITIONS"):
        monkeypatch.delenv(name, raising=False)
    return proj
