"""Recovery without waiting: a process killed inside a step (or in the middle of a
``for_each``) and started again at once carries its run on within 2 s, although the dead
process's lease has 30 s to run; a live process's lease is still never entered.

The processes are ``restart_child.py`` (an engine built as a user's script builds it,
with the default lease TTL) on a SQLite file and on a PostgreSQL schema. The dead owner is
recognised by its worker name (host, PID, start time, machine), see
:mod:`concordia.runtime.liveness`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia.runtime.config import DEFAULT_LEASE_TTL
from tests.pg import drop_schema
from tests.runtime import restart_child
from tests.runtime.conftest import store_url_for
from tests.runtime.restart_child import FAN_OUT, LINEAR
from tests.runtime.sagas import write_definitions
from tests.runtime.workers import ROOT, read_side_log

pytestmark = pytest.mark.slow
CHILD = Path(restart_child.__file__)
RECOVERY_BOUND = 2.0  # seconds from the restart to the run's end


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = store_url_for(request.param, tmp_path)
    yield url
    if request.param == "postgres":
        drop_schema(url.rsplit("schema=", 1)[1])


class Child:
    """One ``restart_child.py`` process."""

    def __init__(self, store: str, tmp: Path, role: str, saga: str, hang: str) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT, "RESTART_SAGA": saga, "RESTART_HANG": hang}
        self.err = tmp / f"{role}-{time.monotonic_ns()}.err"
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), store, str(tmp / "definitions"),
                 str(tmp / "side.log"), role],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)

    def line(self, timeout: float) -> str:
        """Its next line of its own (log lines, structlog's on stdout, are skipped)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        max(deadline - time.monotonic(), 0))
            if not ready:
                raise AssertionError(f"no line from the process within {timeout}s")
            line = self.proc.stdout.readline()
            if not line:
                self.close()
                raise AssertionError(f"the process exited: {self.stderr()}")
            if line.startswith(("inside", "done")):
                return line.strip()

    def stderr(self) -> str:
        return self.err.read_text()

    def close(self) -> None:
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.close()

    def finish(self, timeout: float) -> tuple[str, int]:
        """Its final ``done`` line: the run's status and the runs left to others."""
        words = self.line(timeout).split()
        assert words[0] == "done", words
        self.close()
        assert self.proc.returncode == 0, self.stderr()
        return words[1], int(words[2])


def calls(tmp: Path) -> list[dict[str, Any]]:
    return read_side_log(tmp / "side.log")


SCENARIOS = {"inside_a_step": (LINEAR, "charge"), "inside_a_for_each": (FAN_OUT, "sync:1")}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_restarted_process_carries_its_crashed_run_on_at_once(
        tmp_path: Path, store: str, scenario: str) -> None:
    saga, hang = SCENARIOS[scenario]
    write_definitions(tmp_path / "definitions", saga)
    first = Child(store, tmp_path, "first", saga["name"], hang)
    try:
        assert first.line(60) == "inside"
    finally:
        first.kill()
    dead = first.proc.pid
    restarted_at = time.monotonic()
    again = Child(store, tmp_path, "again", saga["name"], hang)
    status, elsewhere = again.finish(60)
    took = time.monotonic() - restarted_at
    assert status == "completed"
    assert elsewhere == 0
    # Within 2 s of the restart (process start-up included), where waiting out the dead
    # process's lease would take 30.
    assert took < RECOVERY_BOUND < DEFAULT_LEASE_TTL, f"{took:.2f}s"

    log = calls(tmp_path)
    step, _, item = hang.partition(":")
    hung = [c for c in log if c["step"] == step and str(c["item"]) == (item or "None")]
    # The step in hand when the process died ran again, in the new process, as the same
    # attempt with the same idempotency key.
    assert [c["pid"] for c in hung] == [dead, again.proc.pid]
    assert len({(c["attempt"], c["key"]) for c in hung}) == 1, hung
    # Nothing that had finished ran twice.
    done = [(c["step"], c["item"]) for c in log if c["phase"] == "action"]
    assert len(done) == len(set(done)) + 1, done


def test_a_live_process_holding_the_run_is_never_entered(tmp_path: Path, store: str) -> None:
    write_definitions(tmp_path / "definitions", LINEAR)
    holder = Child(store, tmp_path, "first", "linear", "charge")
    try:
        assert holder.line(60) == "inside"
        other = Child(store, tmp_path, "again", "linear", "charge")
        status, elsewhere = other.finish(60)
        # It left the run to the live process, and said so.
        assert (status, elsewhere) == ("running", 1)
        assert all(c["pid"] == holder.proc.pid for c in calls(tmp_path))
    finally:
        holder.kill()
    # Once the holder is gone, the run is carried on at once.
    last = Child(store, tmp_path, "again", "linear", "charge")
    assert last.finish(60) == ("completed", 0)
    assert [c["step"] for c in calls(tmp_path) if c["pid"] == last.proc.pid] == [
        "charge", "ship"]
