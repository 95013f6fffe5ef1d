"""Leases: one owner per run at a time, renewed while the owner works on it.

A worker takes a run's lease in the commit that starts a step (the same commit that
makes the start durable), renews it every third of ``lease_ttl`` while the step's handler
runs, and clears it in the commit that ends its pass. Another worker leaves a leased run
alone until the lease has expired, then carries it on; the expired owner's next commit
is refused (the run's revision moved on), so two workers never both record an attempt.

:class:`LeaseKeeper` does the renewing for the runs a worker holds, from a thread of its
own (so a sync handler that runs for a long time does not let its lease lapse).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import structlog

_log = structlog.get_logger("concordia.leases")

Renew = Callable[[list[str]], list[str]]


class LeaseKeeper:
    """Renews the leases of the runs held, every ``ttl / 3`` seconds.

    ``renew(run_ids)`` extends those leases in the store and returns the ids whose lease
    is not lost (another worker holds none on them); ``on_lost(run_id)`` is called for the
    others.
    """

    def __init__(self, renew: Renew, ttl: float,
                 on_lost: Callable[[str], None] = lambda run_id: None) -> None:
        self._renew = renew
        self._interval = ttl / 3
        self._on_lost = on_lost
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._held[run_id] = self._held.get(run_id, 0) + 1
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="concordia-leases",
                                                daemon=True)
                self._thread.start()

    def release(self, run_id: str) -> None:
        with self._lock:
            count = self._held.get(run_id, 0) - 1
            if count > 0:
                self._held[run_id] = count
            else:
                self._held.pop(run_id, None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def renew_now(self) -> None:
        """Renew every held lease now (also what the thread does on its beat)."""
        ids = self.held()
        if not ids:
            return
        try:
            kept = set(self._renew(ids))
        except Exception as exc:  # the store is unreachable: try again on the next beat
            _log.warning("lease.renew_failed", runs=len(ids), error=str(exc))
            return
        for run_id in _lost(ids, kept):
            _log.warning("lease.lost", run_id=run_id)
            self._on_lost(run_id)

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            self.renew_now()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            # A beat renewing now ends after its one store call.
            thread.join(5.0)


def _lost(ids: Iterable[str], kept: set[str]) -> list[str]:
    return [run_id for run_id in ids if run_id not in kept]
