"""Worker names and the liveness check that frees a dead same-machine owner's leases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from concordia.runtime import liveness
from concordia.runtime.liveness import is_dead, parse_owner, start_time, worker_name


def test_a_worker_name_says_where_it_runs() -> None:
    name = parse_owner(worker_name())
    assert name is not None
    assert name.host == socket.gethostname()
    assert name.pid == os.getpid()
    assert name.start == start_time(os.getpid())
    assert name.start > 0
    assert len(name.node) == 8


def test_names_are_never_reused() -> None:
    assert worker_name() != worker_name()


def test_this_process_is_alive() -> None:
    assert not is_dead(worker_name())


def test_a_process_that_has_exited_is_dead() -> None:
    child = subprocess.run([sys.executable, "-c",
                            "from concordia.runtime.liveness import worker_name;"
                            "print(worker_name())"], capture_output=True, text=True,
                           check=True)
    assert is_dead(child.stdout.strip())


def test_a_reused_pid_is_another_process() -> None:
    name = parse_owner(worker_name())
    assert name is not None
    started_later = f"{name.host}:{name.pid}:{name.start + 1}:{name.node}:abcdef12"
    assert is_dead(started_later)


@pytest.mark.parametrize("owner", [
    "worker-1",  # a name of the user's own
    "elsewhere:1:1:89abcdef:0000aaaa",  # another host
    "{host}:999999999:1:00000000:0000aaaa",  # another machine or PID namespace
    "{host}:999999999:0:{node}:0000aaaa",  # no start time known when it was made
    "{host}:x:1:{node}:0000aaaa",
])
def test_owners_that_cannot_be_checked_are_taken_as_alive(owner: str) -> None:
    name = parse_owner(worker_name())
    assert name is not None
    assert not is_dead(owner.format(host=name.host, node=name.node))


def test_without_proc_every_owner_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    name = worker_name()
    monkeypatch.setattr(liveness, "PROC", "/nonexistent")
    liveness.node_id.cache_clear()
    try:
        assert not is_dead(name.replace(f":{os.getpid()}:", ":999999999:"))
    finally:
        liveness.node_id.cache_clear()
