"""What a benchmark pass costs PostgreSQL and its clients, read from the operating system
and the server rather than assumed.

- :class:`ServerCpu`: the CPU time (user + system) of the server backends that serve one
  benchmark's connections, read from ``/proc/<pid>/stat`` (the server runs on this
  machine). Backends are found by ``application_name``, which each measured client puts
  in its connection URL, so other users of the same server are left out.
- :func:`wal_lsn`: the server's WAL insert position, whose difference over a pass is the
  WAL it wrote (the whole server's: a pass is measured with nothing else writing).
- :class:`RoundTrips`: a loopback TCP proxy that counts round trips: each time a client
  sends after having last received (or first sends), it waits for the server once. The
  client connects to the proxy's port instead of the server's; passes that count go
  through it and are not the timed ones (the proxy's own hops cost latency).
- :func:`process_cpu_s` and :func:`peak_rss_mb`: another process's CPU time and peak
  resident set.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Iterable
from typing import Any

PG = "postgresql://127.0.0.1:5432/test"
_TICK = os.sysconf("SC_CLK_TCK")


def with_app(url: str, app: str) -> str:
    """``url`` with ``application_name=app`` (a libpq option, kept as written)."""
    return f"{url}{'&' if '?' in url else '?'}application_name={app}"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    """Process ``pid``'s peak resident set in MB (VmHWM), NaN where /proc does not say."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _connect() -> Any:
    import psycopg

    return psycopg.connect(PG, autocommit=True)


def wal_lsn() -> int:
    """The server's current WAL position in bytes."""
    with _connect() as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        return int(row[0])


class ServerCpu:
    """The CPU seconds of the backends serving connections named ``apps``, summed; call
    :meth:`sample` while they are connected (a backend seen once is read again until the
    end: its CPU up to its last sample counts)."""

    def __init__(self, apps: Iterable[str]) -> None:
        self.apps = list(apps)
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def _pids(self) -> list[int]:
        with _connect() as conn:
            found = conn.execute("SELECT pid FROM pg_stat_activity WHERE "
                                 "application_name = ANY(%s)", (self.apps,)).fetchall()
        return [int(r[0]) for r in found]

    def begin(self) -> None:
        """The starting point: backends connected now count from here, later ones from 0."""
        for pid in self._pids():
            self.start[pid] = self.last[pid] = process_cpu_s(pid)

    def sample(self) -> None:
        for pid in {*self._pids(), *self.last}:
            cpu = process_cpu_s(pid)
            if cpu > 0.0 or pid not in self.last:
                self.last[pid] = max(cpu, self.last.get(pid, 0.0))

    def seconds(self) -> float:
        """CPU seconds spent since :meth:`begin`, as of the last :meth:`sample`."""
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())


class RoundTrips:
    """A TCP proxy on a loopback port in front of the server that counts round trips
    (see the module docstring). Use as a context manager; :attr:`port` is where clients
    connect; :attr:`count` is the round trips so far, every connection's together."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.count = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="round-trips", daemon=True)

    def url(self, url: str) -> str:
        """``url`` (on the upstream's port) pointed at the proxy."""
        return url.replace(f":{self.upstream[1]}/", f":{self.port}/", 1)

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._listener.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        self._listener.setblocking(False)
        sel.register(self._listener, selectors.EVENT_READ, None)
        # For each socket: its peer, and whether it is the client's side; for each
        # connection, whether the client spoke last.
        peers: dict[socket.socket, tuple[socket.socket, bool, list[bool]]] = {}
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    client, _ = self._listener.accept()
                    server = socket.create_connection(self.upstream)
                    for s in (client, server):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sel.register(s, selectors.EVENT_READ, None)
                    spoke = [False]
                    peers[client] = (server, True, spoke)
                    peers[server] = (client, False, spoke)
                    continue
                if sock not in peers:  # its pair was closed earlier in this round
                    continue
                peer, from_client, spoke = peers[sock]
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    for s in (sock, peer):
                        sel.unregister(s)
                        s.close()
                        peers.pop(s, None)
                    continue
                if from_client and not spoke[0]:
                    self.count += 1
                spoke[0] = from_client
                peer.sendall(data)
        for s in peers:
            s.close()
        sel.close()
