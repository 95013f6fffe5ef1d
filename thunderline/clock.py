"""The demo's clock: real time for every stamp, skipped time only to fire timers.

A demo that waited out a six-hour await timeout would never end, and one on a virtual
clock fixed in the future stamps its runs with that future date, so that in a store
shared with real runs they sort above them. This clock reads the wall clock plus the
time skipped to make timers due; each scenario gives the skipped time back when it ends,
so every run starts stamped with the real time.
"""

from __future__ import annotations

import time


class SkippingClock:
    """The wall clock, moved ahead by :meth:`advance` (or a sleep) until :meth:`rejoin`."""

    def __init__(self) -> None:
        self._skipped = 0.0

    def now(self) -> float:
        return time.time() + self._skipped

    def advance(self, seconds: float) -> None:
        """Skip ``seconds`` ahead: timers due within them fire on the engine's next pass."""
        self._skipped += max(seconds, 0.0)

    def sleep(self, seconds: float) -> None:
        # The engine sleeps only to wait for a timer (a retry's backoff): skip the wait.
        self.advance(seconds)

    @property
    def skipped(self) -> float:
        """Seconds this clock is ahead of the wall clock."""
        return self._skipped

    def rejoin(self) -> None:
        """Back to the wall clock, once no run waits on a timer (between scenarios)."""
        self._skipped = 0.0
