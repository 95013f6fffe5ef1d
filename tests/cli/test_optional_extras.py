"""Commands on an install without the optional extras (``pip install concordia-sagas``): what
does not need an extra works, and what does says which extra to install, in one line.

Each case runs the CLI in a fresh interpreter where the extra's modules cannot be
imported, as on a machine where they were never installed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI with the named top-level modules made unimportable.
_RUNNER = """
import sys
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Missing())
sys.argv = ["concordia", *sys.argv[2:]]
from concordia.cli import main
sys.exit(main())
"""


def concordia_without(blocked: str, *args: str, timeout: float = 60,
                      ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _RUNNER, blocked, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_a_worker_without_a_bus_does_not_need_nats(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    # The worker says it is working once its engine is built (the bus is chosen then);
    # SIGTERM then stops it the way a supervisor does.
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, "nats", "worker", "--store",
                             store, "--handlers", "thunderline.handlers"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("concordia worker on sqlite:"), line + proc.stderr.read()
        time.sleep(2)  # its loop takes over SIGTERM once it runs
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=60)
    assert "Traceback" not in rest, rest
    assert proc.returncode == 0, rest


def test_the_bus_commands_name_the_extra_they_need(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    for args in (["relay", "--store", store],
                 ["consume", "--store", store],
                 ["worker", "--store", store, "--handlers", "thunderline.handlers",
                  "--bus", "nats://127.0.0.1:4222"]):
        done = concordia_without("nats", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip() == (
            "concordia: error: the NATS bus needs nats-py (pip install 'concordia-sagas[nats]'): "
            "No module named 'nats'"), (args, done.stderr)


def test_a_postgresql_store_names_its_extra() -> None:
    done = concordia_without("psycopg,psycopg_pool", "runs", "--store",
                             "postgresql://127.0.0.1:5432/test")
    assert done.returncode == 2, done.stderr
    assert "pip install 'concordia-sagas[postgres]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_names_its_extra() -> None:
    done = concordia_without("fastapi", "serve", "--store", "memory://",
                             "--handlers", "thunderline.handlers")
    assert done.returncode == 2, done.stderr
    assert "pip install 'concordia-sagas[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
