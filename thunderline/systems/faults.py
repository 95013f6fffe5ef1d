"""Failure injection: a plan of failures the simulated systems raise on demand.

Tests and the demo arm a failure on a named operation (``"cerebros.dispatch"``,
``"thunderblock.sync_adapter"``, ...). The next call of that operation (or, with
``skip=n``, the call after the next ``n``: the third adapter of a fan-out, say) fails,
either before doing anything (``after=0``) or *midway*, after ``after`` of its items are done:
that is how a step comes to fail with part of its side effects already in the world,
the case a compensation must still undo. ``after`` at or beyond the number of items
fails the call once all its work is done, like a response lost on the way back.

The plan lives in memory, per ``World``: it steers this process's simulation and is not
part of the simulated systems' persisted state.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from thunderline.systems.errors import InjectedFailure

ErrorSpec = BaseException | type[BaseException] | None


@dataclass(frozen=True, slots=True)
class PlannedFailure:
    operation: str
    after: int
    error: ErrorSpec
    skip: int = 0  # calls that pass before this failure is armed


@dataclass(frozen=True, slots=True)
class FiredFailure:
    """A planned failure that was raised: which operation, after how many items."""

    operation: str
    after: int
    error: str


class FailurePlan:
    """Per-operation queues of planned failures, consumed one per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: dict[str, deque[PlannedFailure]] = {}
        self._fired: list[FiredFailure] = []

    def fail_next(self, operation: str, *, times: int = 1, after: int = 0,
                  error: ErrorSpec = None, skip: int = 0) -> None:
        """Make the next ``times`` calls of ``operation`` fail after ``after`` items,
        once ``skip`` calls have passed untouched.

        ``error`` is an exception instance or class to raise (a class is called with a
        message); by default a transient ``InjectedFailure``.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if after < 0 or skip < 0:
            raise ValueError("after and skip must not be negative")
        with self._lock:
            queue = self._planned.setdefault(operation, deque())
            queue.extend(PlannedFailure(operation, after, error, skip if k == 0 else 0)
                         for k in range(times))

    def clear(self, operation: str | None = None) -> None:
        """Drop the planned failures of one operation, or of all."""
        with self._lock:
            if operation is None:
                self._planned.clear()
            else:
                self._planned.pop(operation, None)

    def pending(self) -> dict[str, int]:
        """Planned failures not yet raised, by operation."""
        with self._lock:
            return {op: len(q) for op, q in self._planned.items() if q}

    def fired(self) -> list[FiredFailure]:
        """Every planned failure raised so far, in order."""
        with self._lock:
            return list(self._fired)

    def begin(self, operation: str) -> Trip:
        """Start one call of ``operation``; the returned trip raises where planned."""
        with self._lock:
            queue = self._planned.get(operation)
            planned = queue.popleft() if queue else None
            if queue is not None and planned is not None and planned.skip:
                # This call passes untouched; the failure waits for a later one.
                queue.appendleft(PlannedFailure(planned.operation, planned.after,
                                                planned.error, planned.skip - 1))
                planned = None
        return Trip(self, operation, planned)

    def _fire(self, planned: PlannedFailure) -> BaseException:
        spec = planned.error
        if spec is None:
            exc: BaseException = InjectedFailure(planned.operation, planned.after)
        elif isinstance(spec, BaseException):
            exc = spec
        else:
            exc = spec(f"injected failure in {planned.operation} after {planned.after} item(s)")
        with self._lock:
            self._fired.append(FiredFailure(planned.operation, planned.after, repr(exc)))
        return exc


class Trip:
    """One call's view of the plan: call ``item(i)`` before item ``i``, ``finish()`` last."""

    def __init__(self, plan: FailurePlan, operation: str,
                 planned: PlannedFailure | None) -> None:
        self._plan = plan
        self.operation = operation
        self._planned = planned

    @property
    def armed(self) -> bool:
        return self._planned is not None

    def item(self, index: int) -> None:
        """Raise if the plan says this call fails once ``index`` items are done."""
        if self._planned is not None and index >= self._planned.after:
            planned, self._planned = self._planned, None
            raise self._plan._fire(planned)

    def finish(self) -> None:
        """Raise a failure planned beyond the call's last item (its work is all done)."""
        if self._planned is not None:
            planned, self._planned = self._planned, None
            raise self._plan._fire(planned)
