"""Retry decisions: is an error worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random

from concordia.definitions.models import RetryPolicy
from concordia.errors import PermanentError, RetryableError


def is_retryable(policy: RetryPolicy, error: BaseException) -> bool:
    """Classify ``error`` by the names in its class hierarchy (never by importing names)."""
    if isinstance(error, PermanentError):
        return False
    if isinstance(error, RetryableError):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    names |= {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__}
    if names & set(policy.non_retryable):
        return False
    return "*" in policy.retryable or bool(names & set(policy.retryable))


def backoff_delay(policy: RetryPolicy, attempt: int, seed: str) -> float:
    """Seconds to wait after failed ``attempt`` (1-based).

    The jitter is drawn from a generator seeded by the step's idempotency key and the
    attempt, so a replay after a crash schedules the same wait.
    """
    b = policy.backoff
    delay = min(b.initial * (b.factor ** (attempt - 1)), b.max)
    if b.jitter:
        rng = random.Random(f"{seed}:{attempt}")
        delay *= 1 + b.jitter * (2 * rng.random() - 1)
    return max(delay, 0.0)
