"""What every simulated system shares: the database, the failure plan and the clock."""

from __future__ import annotations

from typing import ClassVar

from thunderline.systems.db import Clock, Database, iso
from thunderline.systems.faults import FailurePlan, Trip


class System:
    """Base of the simulated systems.

    ``SCHEMA`` holds the tables the system owns; ``OPERATIONS`` names its calls that a
    failure can be planted in (as ``"<name>.<operation>"``).
    """

    name: ClassVar[str] = "system"
    SCHEMA: ClassVar[str] = ""
    OPERATIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, db: Database, faults: FailurePlan, clock: Clock) -> None:
        self._db = db
        self._faults = faults
        self._clock = clock

    @classmethod
    def fault_points(cls) -> list[str]:
        return [f"{cls.name}.{op}" for op in cls.OPERATIONS]

    def _now(self) -> str:
        return iso(self._clock())

    def _trip(self, operation: str) -> Trip:
        """The failure plan's view of one call of ``<system>.<operation>``."""
        # Checked so that a fault point missing from OPERATIONS (and so impossible to
        # plant a failure in through World.fail_next) shows up at its first call.
        if operation not in self.OPERATIONS:
            raise AssertionError(f"{self.name}.{operation} is not a declared operation")
        return self._faults.begin(f"{self.name}.{operation}")

    def _guard(self, operation: str) -> Trip:
        """For single-item operations: fail now if planned (before any work), else hand
        back the trip so the caller can ``finish()`` it once the work is done, where a
        failure planned with ``after=1`` fires (a response lost on the way back)."""
        trip = self._trip(operation)
        trip.item(0)
        return trip
