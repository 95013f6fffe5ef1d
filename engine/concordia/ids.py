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
from collections.abc import Callable

_RAND_BITS = 74  # rand_a (12) + rand_b (62)
_RAND_MAX = (1 << _RAND_BITS) - 1
# A fresh millisecond starts the counter in the lower half so that many ids in the same
# millisecond fit before it overflows into the next one.
_SEED_BITS = _RAND_BITS - 1
# Up to 2**32 per step: room for about 2**42 ids per millisecond while keeping the
# next id of a burst unpredictable.
_STEP_BITS = 32
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _clock_ms() -> int:
    return time.time_ns() // 1_000_000


class UUID7Generator:
    """Mints UUIDv7s in strictly increasing order from one clock (thread-safe)."""

    def __init__(self, clock_ms: Callable[[], int] = _clock_ms) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def reset(self) -> None:
        """Forget the counter, so the next id starts from a fresh random value."""
        with self._lock:
            self._last_ms = -1
            self._last_rand = 0

    def __call__(self) -> uuid.UUID:
        now = self._clock_ms()
        with self._lock:
            if now > self._last_ms:
                self._last_ms = now
                self._last_rand = secrets.randbits(_SEED_BITS)
            else:
                # Same millisecond, or the clock stepped back: keep the last timestamp
                # and count forward so that order is never broken.
                self._last_rand += secrets.randbits(_STEP_BITS) + 1
                if self._last_rand > _RAND_MAX:
                    self._last_ms += 1
                    self._last_rand = secrets.randbits(_SEED_BITS)
            stamp, rand = self._last_ms, self._last_rand
        return build_uuid7(stamp, rand)


def build_uuid7(ms: int, rand: int) -> uuid.UUID:
    """The UUIDv7 with timestamp ``ms`` and the 74 bits ``rand`` (rand_a, then rand_b)."""
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | rand_a << 64
        | 0b10 << 62
        | rand_b
    )
    return uuid.UUID(int=value)


_default = UUID7Generator()

if hasattr(os, "register_at_fork"):  # absent on some platforms (e.g. Windows)
    # A forked child would otherwise continue the parent's counter and could mint the
    # parent's next id.
    os.register_at_fork(after_in_child=_default.reset)


def uuid7() -> uuid.UUID:
    """A new UUIDv7 from the process-wide generator."""
    return _default()


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
