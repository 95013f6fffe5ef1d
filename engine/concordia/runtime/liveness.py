"""Whether a lease's owner is still alive: worker names that say where a worker runs,
and the check that frees a dead owner's leases at once instead of after their TTL.

A worker's name is ``host:pid:start:node:random``: the host name, the process id, the
process's start time (clock ticks since boot, from ``/proc``), ``node`` (a short digest of
the machine's boot id and the process's PID namespace) and a random part. Two names with
the same host and node were made by processes that see each other's PIDs, so one can tell
whether the other still runs: its PID is gone, or is now another process (a different
start time). :func:`is_dead` says so only then; an owner on another machine, in another
container, before a reboot, or with a name of the user's own is never judged dead, and its
leases keep their TTL. A restarted process therefore carries on the runs its crashed
predecessor held at once, and a live worker's runs are never entered.

The check needs Linux's ``/proc``; elsewhere every owner is taken to be alive.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass

from concordia.ids import new_id

PROC = "/proc"


@dataclass(frozen=True, slots=True)
class OwnerName:
    """A worker name taken apart (see the module docstring)."""

    host: str
    pid: int
    start: int
    node: str


@functools.cache
def node_id() -> str:
    """This process's machine and PID namespace, as 8 hex digits ('' when unknown)."""
    try:
        with open(f"{PROC}/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink(f"{PROC}/self/ns/pid")
    except OSError:
        return ""
    return hashlib.blake2s(f"{boot}/{namespace}".encode(), digest_size=4).hexdigest()


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is none."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses of
    # its own: the fields after it start past the last ')'. Start time is field 22.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def worker_name() -> str:
    """A name no other worker has, that says where this process runs (see the module
    docstring): a restarted process is a new worker, so it never mistakes a dead one's
    leases for its own."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or 0}:{node_id() or '-'}:" \
           f"{new_id()[-8:]}"


def parse_owner(name: str) -> OwnerName | None:
    """The parts of a worker name made by :func:`worker_name`, or None for any other."""
    parts = name.rsplit(":", 4)
    if len(parts) != 5 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return OwnerName(parts[0], int(parts[1]), int(parts[2]), parts[3])


def is_dead(owner: str) -> bool:
    """Whether ``owner`` is a worker of this machine and PID namespace whose process no
    longer runs (see the module docstring); False whenever that cannot be known."""
    name = parse_owner(owner)
    node = node_id()
    if (name is None or not node or name.node != node or name.start == 0
            or name.host != socket.gethostname()):
        return False
    return start_time(name.pid) != name.start
