"""Retry decisions: is an error worth another attempt, and how long to wait before it.

Pure functions of the policy, the attempt and the error, used by the planner's callers
for actions and compensations alike: one decision, written once.
"""

from __future__ import annotations

import random

from concordia.definitions.models import RetryPolicy
from concordia.errors import PermanentError, RetryableError


def error_names(error: BaseException) -> set[str]:
    """The names an author may give ``error`` by: each class of its hierarchy, plain and
    module-qualified (compared, never imported)."""
    mro = type(error).__mro__
    return {cls.__name__ for cls in mro} | {f"{cls.__module__}.{cls.__qualname__}"
                                            for cls in mro}


def is_retryable(policy: RetryPolicy, error: BaseException) -> bool:
    """Classify ``error`` by the names in its class hierarchy (never by importing names)."""
    if isinstance(error, PermanentError):
        return False
    names = error_names(error)
    if names & set(policy.non_retryable):  # the author's word wins over the class's default
        return False
    if isinstance(error, RetryableError):
        return True
    return "*" in policy.retryable or bool(names & set(policy.retryable))


def backoff_delay(policy: RetryPolicy, attempt: int, seed: str) -> float:
    """Seconds to wait after failed ``attempt`` (1-based).

    The jitter is drawn from a generator seeded by the step's idempotency key and the
    attempt, so a replay after a crash schedules the same wait.
    """
    b = policy.backoff
    try:
        grown = b.initial * (b.factor ** (attempt - 1))
    except OverflowError:  # a schema-valid factor and attempt count can pass float range
        grown = b.max
    delay = min(grown, b.max)
    if b.jitter:
        rng = random.Random(f"{seed}:{attempt}")
        delay *= 1 + b.jitter * (2 * rng.random() - 1)
    return max(delay, 0.0)


def after_failure(policy: RetryPolicy, attempt: int, error: BaseException,
                  seed: str) -> float | None:
    """Seconds until the next attempt after failed ``attempt``, or None: give up.

    ``seed`` is the idempotency key of what is retried (a step or its compensation).
    """
    if attempt < policy.attempts and is_retryable(policy, error):
        return backoff_delay(policy, attempt, seed)
    return None
