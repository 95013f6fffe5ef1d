"""RFC 3339 timestamps in UTC: one way to write them and a strict way to read them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 §5.6 `date-time`: full date, `T`, full time with seconds, optional fraction
# and a mandatory offset. Python's fromisoformat alone is looser (it takes dates without
# a time, times without an offset, and week dates), so the shape is checked first.
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """``2026-11-27T09:30:00.123456Z``; a naive datetime is refused, not guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 date-time (offset required); raise ValueError otherwise."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time (e.g. 2026-11-27T09:30:00Z)")
    fraction = match.group(7) or ""
    # fromisoformat takes at most 6 fractional digits; RFC 3339 allows any number.
    normalised = (
        f"{match.group(1)}-{match.group(2)}-{match.group(3)}T{match.group(4)}:"
        f"{match.group(5)}:{_no_leap(match.group(6))}{fraction[:7]}"
        f"{'+00:00' if match.group(8) in ('Z', 'z') else match.group(8)}"
    )
    try:
        return datetime.fromisoformat(normalised)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid date-time (a field is out of range)") from None


def is_timestamp(text: object) -> bool:
    """True when ``text`` is a string holding a valid RFC 3339 date-time."""
    if not isinstance(text, str):
        return False
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True


def _no_leap(seconds: str) -> str:
    # RFC 3339 allows a leap second (:60); datetime cannot hold it, so it is read as :59.
    return "59" if seconds == "60" else seconds
