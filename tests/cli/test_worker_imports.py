"""What ``concordia worker`` loads: the modules a worker's path pulls in, nothing it does not
use (the resident memory of every worker process pays for each one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# The worker command as `concordia worker` runs it, stopped where it would start working:
# the parser, the definitions loaded, the handlers bound, the engine and its store open.
_WORKER = """
import asyncio, json, sys
def stop_here(coro):
    coro.close()
    print(json.dumps(sorted(sys.modules)))
asyncio.run = stop_here
from concordia.cli import main
main(["worker", "--store", sys.argv[1], "--handlers", "thunderline.handlers",
      "--definitions", "definitions", "policies"])
"""

# Packages a worker never uses: the command line's terminal output (rich, and pygments
# under it), the compiled JSON Schema validator (jsonschema checks payloads at run time:
# one validator is resident, not two), the CEL library's own command line, the HTTP
# service and the optional extras it was not asked for.
_NOT_IN_A_WORKER = {"rich", "pygments", "jsonschema_rs", "prompt_toolkit", "typer",
                    "fastapi", "starlette", "uvicorn", "httpx", "jwt", "prometheus_client",
                    "nats", "argcomplete", "opentelemetry", "psycopg", "psycopg_pool"}


def worker_modules(tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _WORKER,
                          f"sqlite:///{tmp_path / 'runs.db'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_worker_loads_only_what_its_path_uses(tmp_path: Path) -> None:
    modules = worker_modules(tmp_path)
    packages = {m.split(".")[0] for m in modules}
    assert not packages & _NOT_IN_A_WORKER, sorted(packages)
    # What it does use: its store's driver, one JSON Schema validator, pydantic where the
    # definitions are loaded, the CEL library's compiled module.
    assert {"sqlite3", "jsonschema", "pydantic", "cel", "structlog"} <= packages
    assert "concordia.cli.tables" not in modules


def test_a_service_that_embeds_the_engine_keeps_its_structlog_as_it_was() -> None:
    # Only the command line hides rich from structlog: an embedding service's own
    # ConsoleRenderer still formats tracebacks with rich.
    probe = ("import concordia, concordia.logging, structlog.dev; "
             "print(structlog.dev.rich is not None)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"
