"""Durations as written in YAML (``250ms``, ``30s``, ``5m``, ``2h``, ``1d`` or seconds)."""

from __future__ import annotations

import math
import re

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = _DURATION_RE.pattern
# The longest timeout or backoff a definition may ask for. A durable timer further out
# than a year is a typo far more often than a plan, and unbounded values overflow the
# arithmetic that schedules timers (1e300 seconds is a valid YAML number).
MAX_DURATION = 365 * 86400.0


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
    else:
        match = _DURATION_RE.match(value.strip())
        if not match:
            raise ValueError(f"{value[:40]!r} is not a duration; write e.g. 250ms, 30s, 5m, "
                             "2h or 1d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        shown = value.strip() if len(value) <= 40 else value.strip()[:40] + "…"
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"duration {shown} is longer than the 365 days a timer may wait")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds
