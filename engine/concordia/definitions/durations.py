"""Durations as written in YAML (``250ms``, ``30s``, ``5m``, ``2h``, ``1d`` or seconds)."""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = _DURATION_RE.pattern


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    match = _DURATION_RE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration; write e.g. 250ms, 30s, 5m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds
