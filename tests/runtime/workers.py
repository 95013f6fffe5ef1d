"""``concordia worker`` processes for the multi-worker and poison tests: start, watch, stop.

Each worker is the real command line (``python -m concordia.cli worker``) on a SQLite file,
with the repository on its import path so ``--handlers tests.runtime.<module>`` imports.
Its stderr (structlog's JSON lines, the worker's own messages) goes to a file of its own,
which the tests read to see why a worker stopped.

The side logs the handlers write are JSON lines appended with one ``os.write`` each on a
file opened with ``O_APPEND``: lines of different processes never interleave, and a
process killed with SIGKILL leaves whole lines only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[2])


class SideLog:
    """The writing end of a side log, opened once per process."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **entry: Any) -> None:
        # What JSON cannot hold (a thread object an in-process recorder keeps) is noted
        # by its repr.
        line = json.dumps(entry, separators=(",", ":"), default=repr)
        os.write(self.fd, (line + "\n").encode())


def read_side_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # Strict: a torn line would mean two writers interleaved, and fails the test.
    return [json.loads(line) for line in path.read_text().splitlines()]


class WorkerProcess:
    """One ``concordia worker`` process."""

    def __init__(self, store: str, handlers: str, definitions: Path, log_dir: Path, *,
                 concurrency: int = 1, lease_ttl: float = 1.0, poll_interval: float = 0.1,
                 env: dict[str, str] | None = None, name: str = "worker",
                 extra: Sequence[str] = ()) -> None:
        self.stderr_path = log_dir / f"{name}.err"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "concordia.cli", "worker", "--store", store,
             "--handlers", handlers, "--definitions", str(definitions),
             "--concurrency", str(concurrency), "--lease-ttl", str(lease_ttl),
             "--poll-interval", str(poll_interval), *extra],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.pid = self.proc.pid
        self.exit_code: int | None = None
        # When the process was seen dead (after waitpid): an upper bound of its death.
        self.died_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL it (if it still runs) and reap it."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        return self.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM it (it finishes the steps in hand, releases its leases) and reap it."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        if self.died_at is None:
            self.died_at = time.time()
            self.exit_code = code
            self._stderr.close()
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def stop_all(workers: Sequence[WorkerProcess]) -> None:
    """Make sure no worker outlives its test, whatever happened."""
    for worker in workers:
        if worker.alive():
            worker.proc.send_signal(signal.SIGKILL)
    for worker in workers:
        worker.wait(10)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)
