"""Time-ordered identifiers: UUIDv7 (RFC 9562), which Python 3.11's ``uuid`` lacks.

Layout (RFC 9562 §5.7): 48-bit Unix time in milliseconds, 4-bit version (7), 12 bits
``rand_a``, 2-bit variant (``10``), 62 bits ``rand_b``. Ids made by one process sort in
creation order even within a millisecond: the 74 random bits are treated as one counter
that is incremented by a random step while the clock has not moved on (the "monotonic
random" method of RFC 9562 §6.2), so ids stay unguessable yet ordered.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
import uuid

_RAND_BITS = 74  # rand_a (12) + rand_b (62)
_RAND_MAX = (1 << _RAND_BITS) - 1
# A fresh millisecond starts the counter in the lower half so that many ids in the same
# millisecond fit before it overflows into the next one.
_SEED_BITS = _RAND_BITS - 1
# Up to 2**32 per step: ample headroom (2**41 ids per millisecond) while keeping the
# next id of a burst unpredictable.
_STEP_BITS = 32
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _reset_after_fork() -> None:
    # A forked child would otherwise continue the parent's counter and could mint the
    # parent's next id; a fresh random seed on the next call avoids that.
    global _last_ms, _last_rand
    _last_ms = -1
    _last_rand = 0


if hasattr(os, "register_at_fork"):  # absent on some platforms (e.g. Windows)
    os.register_at_fork(after_in_child=_reset_after_fork)


def uuid7(ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; ``ms`` (Unix milliseconds) overrides the clock, e.g. for tests."""
    global _last_ms, _last_rand
    now = time.time_ns() // 1_000_000 if ms is None else ms
    with _lock:
        if now > _last_ms:
            _last_ms = now
            _last_rand = secrets.randbits(_SEED_BITS)
        else:
            # Same millisecond, or the clock stepped back: keep the last timestamp and
            # count forward so that order is never broken.
            _last_rand += secrets.randbits(_STEP_BITS) + 1
            if _last_rand > _RAND_MAX:
                _last_ms += 1
                _last_rand = secrets.randbits(_SEED_BITS)
        stamp, rand = _last_ms, _last_rand
    rand_a = rand >> 62
    rand_b = rand & ((1 << 62) - 1)
    value = (
        (stamp & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | rand_a << 64
        | 0b10 << 62
        | rand_b
    )
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new UUIDv7 in its canonical string form (what events, runs and decisions use)."""
    return str(uuid7())


def uuid7_ms(value: str | uuid.UUID) -> int:
    """The Unix millisecond timestamp inside a UUIDv7."""
    u = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    if u.version != 7:
        raise ValueError(f"{value} is not a UUIDv7")
    return u.int >> 80


def is_uuid(value: object) -> bool:
    """True for a canonical (lowercase or uppercase, hyphenated) UUID string."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value.lower()) is not None
