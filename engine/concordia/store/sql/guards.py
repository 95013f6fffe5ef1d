"""A patch's guards as a SQL condition, translated from their data.

:func:`concordia.store.changes.holds` gives each guard its meaning; this is the same
meaning over a run's row (``r``) and the patched step's or item's row (``s``), with every
status and time passed as a parameter. ``among`` writes "this column's value is one of
the list given as one parameter" in the dialect's words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from concordia.store.changes import (
    AnyOf,
    AttemptIs,
    CancelUnset,
    CompIn,
    Guard,
    NoLiveLease,
    RunIn,
    StepIn,
)

Among = Callable[[str], str]
Listed = Callable[[Sequence[Any]], Any]


def condition(guards: Sequence[Guard], among: Among, listed: Listed, args: list[Any],
              *, record: bool) -> str:
    """The SQL that holds where every guard does (appending its parameters to ``args``);
    without a ``record`` (the patch names no step), no guard about one holds."""
    if not guards:
        return "1 = 1"
    return " AND ".join(_one(g, among, listed, args, record) for g in guards)


def _one(guard: Guard, among: Among, listed: Listed, args: list[Any], record: bool) -> str:
    if not record and isinstance(guard, StepIn | CompIn | AttemptIs):
        return "1 = 0"
    match guard:
        case RunIn(statuses):
            args.append(listed(sorted(s.value for s in statuses)))
            return among("r.status")
        case CancelUnset():
            return "r.cancel_reason IS NULL"
        case NoLiveLease(owner, at):
            args.extend((owner, at))
            return ("(r.lease_owner IS NULL OR r.lease_owner = ? OR r.lease_expires IS NULL "
                    "OR r.lease_expires <= ?)")
        case StepIn(statuses):
            args.append(listed(sorted(s.value for s in statuses)))
            return among("s.status")
        case CompIn(statuses):
            args.append(listed(sorted(s.value for s in statuses)))
            return among("s.comp_status")
        case AttemptIs(attempt):
            args.append(attempt)
            return "s.attempt = ?"
        case AnyOf(choices):
            if not choices:
                return "1 = 0"
            return "(" + " OR ".join(_one(g, among, listed, args, record)
                                     for g in choices) + ")"
    raise AssertionError(f"not a guard: {guard!r}")  # pragma: no cover
