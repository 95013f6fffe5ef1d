"""Time-ordered identifiers: UUIDv7 (RFC 9562), which Python 3.11's ``uuid`` lacks.

The ids come from ``uuid-utils`` (the Rust ``uuid`` crate's generator), which keeps the
guarantee the stores rely on: ids made later in one process sort later, also within one
millisecond and across threads (the crate counts within a millisecond, RFC 9562 §6.2,
behind one lock), while staying unguessable. tests/events/test_ids.py holds it to that.
"""

from __future__ import annotations

import os
import re
import uuid

import uuid_utils

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

if hasattr(os, "register_at_fork"):  # absent on some platforms (e.g. Windows)
    # A forked child starts from the parent's generator state; a fresh seed keeps the two
    # from ever drawing the same random bits.
    os.register_at_fork(after_in_child=uuid_utils.reseed_rng)


def uuid7() -> uuid.UUID:
    """A new UUIDv7, as the standard library's ``uuid.UUID``."""
    return uuid.UUID(int=uuid_utils.uuid7().int)


def new_id() -> str:
    """A new UUIDv7 in its canonical string form (what events, runs and decisions use)."""
    return str(uuid_utils.uuid7())


def uuid7_ms(value: str | uuid.UUID) -> int:
    """The Unix millisecond timestamp inside a UUIDv7."""
    u = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    if u.version != 7:
        raise ValueError(f"{value} is not a UUIDv7")
    return u.int >> 80


def is_uuid(value: object) -> bool:
    """True for a canonical (lowercase or uppercase, hyphenated) UUID string."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value.lower()) is not None
