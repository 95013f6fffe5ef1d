"""Unit tests of the pure retry decisions (``concordia.runtime.retry``), table by table.

They prove how an error is classified (by the names in its class hierarchy, short or
qualified; ``PermanentError`` and ``RetryableError`` override the lists; ``*`` matches
every error; ``non_retryable`` wins over ``retryable``), how the backoff grows and is
capped, that jitter stays in its band and is the same for the same seed, and that
``after_failure`` gives up at the last attempt or on a non-retryable error.
"""

from __future__ import annotations

import pytest

from concordia.definitions.models import Backoff, RetryPolicy
from concordia.errors import HandlerError, PermanentError, RetryableError
from concordia.runtime.retry import after_failure, backoff_delay, is_retryable


class Outage(ConnectionError):
    """A domain error below a built-in one: matched through its hierarchy."""


class CardDeclined(PermanentError):
    pass


class RateLimited(RetryableError):
    pass


def policy(*, retryable: tuple[str, ...] = ("*",), non_retryable: tuple[str, ...] = (),
           attempts: int = 3, initial: float = 1.0, factor: float = 2.0, cap: float = 300.0,
           jitter: float = 0.0) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, retryable=retryable, non_retryable=non_retryable,
                       backoff=Backoff(initial=initial, factor=factor, max=cap, jitter=jitter))


OUTAGE = f"{__name__}.Outage"

CLASSIFICATION = [
    # (retryable, non_retryable, error, expected, why)
    (("*",), (), ValueError("x"), True, "* matches every error"),
    (("*",), (), Outage("x"), True, "* matches domain errors too"),
    (("TimeoutError",), (), TimeoutError(), True, "listed by its own name"),
    (("TimeoutError",), (), ValueError("x"), False, "not listed"),
    (("OSError",), (), ConnectionResetError(), True, "a base class's name matches"),
    (("ConnectionError",), (), Outage("x"), True, "a domain subclass of a listed class"),
    (("builtins.ConnectionError",), (), Outage("x"), True, "qualified base name"),
    ((OUTAGE,), (), Outage("x"), True, "qualified name of the class itself"),
    (("tests.Outage",), (), Outage("x"), False, "a qualified name must be exact"),
    (("Outage",), (), ConnectionError("x"), False, "a subclass name never matches its base"),
    (("outage",), (), Outage("x"), False, "names are case-sensitive"),
    ((), (), ValueError("x"), False, "an empty list retries nothing"),
    (("*",), ("ValueError",), ValueError("x"), False, "non_retryable wins over *"),
    (("*",), ("ValueError",), UnicodeDecodeError("utf-8", b"", 0, 1, "bad"), False,
     "non_retryable covers subclasses"),
    (("*",), ("ValueError",), KeyError("x"), True, "non_retryable names only its family"),
    (("OSError",), ("ConnectionRefusedError",), ConnectionRefusedError(), False,
     "non_retryable wins over a listed base"),
    (("OSError",), ("ConnectionRefusedError",), ConnectionResetError(), True,
     "the listed base still covers its other subclasses"),
    (("ConnectionError",), (OUTAGE,), Outage("x"), False, "qualified non_retryable"),
    (("*",), (), PermanentError("no"), False, "PermanentError is never retried"),
    (("*",), (), CardDeclined("no"), False, "nor are its subclasses"),
    (("CardDeclined", "PermanentError"), (), CardDeclined("no"), False,
     "PermanentError wins even when its name is listed"),
    (("TimeoutError",), (), RetryableError("later"), True,
     "RetryableError is retried though not listed"),
    ((), (), RateLimited("later"), True, "so are its subclasses, even with an empty list"),
    (("*",), (), HandlerError("x"), True, "a plain HandlerError follows the lists"),
    (("HandlerError",), (), HandlerError("x"), True, "and can be listed by name"),
]


@pytest.mark.parametrize(("retryable", "non_retryable", "error", "expected", "why"),
                         CLASSIFICATION, ids=[c[-1] for c in CLASSIFICATION])
def test_is_retryable(retryable: tuple[str, ...], non_retryable: tuple[str, ...],
                      error: BaseException, expected: bool, why: str) -> None:
    assert is_retryable(policy(retryable=retryable, non_retryable=non_retryable),
                        error) is expected, why


def test_is_retryable_never_imports_the_names_it_is_given() -> None:
    # A name of a module that does not exist is only compared, never imported.
    rules = policy(retryable=("no_such_module.Boom",), non_retryable=("os.system",))
    assert is_retryable(rules, ValueError("x")) is False


GROWTH = [
    # (initial, factor, cap, attempt, expected seconds)
    (1.0, 2.0, 300.0, 1, 1.0),
    (1.0, 2.0, 300.0, 2, 2.0),
    (1.0, 2.0, 300.0, 3, 4.0),
    (1.0, 2.0, 300.0, 5, 16.0),
    (10.0, 3.0, 300.0, 2, 30.0),
    (0.5, 1.0, 300.0, 7, 0.5),  # factor 1: a constant wait
    (1.0, 10.0, 30.0, 2, 10.0),
    (1.0, 10.0, 30.0, 3, 30.0),  # 100 capped at max
    (1.0, 10.0, 30.0, 50, 30.0),
    (1.0, 2.0, 60.0, 99, 60.0),  # the last retry of the most attempts a policy allows
    (1.0, 1e4, 60.0, 99, 60.0),  # a growth past float range is still just the cap
    (0.001, 2.0, 60.0, 4, 0.008),  # a duration in milliseconds
    (90.0, 2.0, 60.0, 1, 60.0),  # an initial wait above max is capped too
]


@pytest.mark.parametrize(("initial", "factor", "cap", "attempt", "expected"), GROWTH)
def test_backoff_grows_geometrically_up_to_the_cap(initial: float, factor: float, cap: float,
                                                   attempt: int, expected: float) -> None:
    rules = policy(attempts=100, initial=initial, factor=factor, cap=cap)
    assert backoff_delay(rules, attempt, "seed") == pytest.approx(expected)


@pytest.mark.parametrize(("jitter", "attempt", "base"), [
    (0.1, 1, 4.0), (0.5, 2, 8.0), (1.0, 3, 16.0), (0.2, 10, 30.0)])
def test_jitter_stays_within_its_band_around_the_capped_delay(jitter: float, attempt: int,
                                                              base: float) -> None:
    rules = policy(attempts=100, initial=4.0, factor=2.0, cap=30.0, jitter=jitter)
    delays = [backoff_delay(rules, attempt, f"run-{i}:step") for i in range(200)]
    assert all(base * (1 - jitter) <= d <= base * (1 + jitter) for d in delays)
    assert all(d >= 0 for d in delays)
    # It does spread the waits (that is its purpose): 200 seeds give many values.
    assert len(set(delays)) > 150


def test_jitter_is_the_same_for_the_same_seed_and_attempt() -> None:
    rules = policy(attempts=10, initial=2.0, jitter=0.5)
    # A replay after a crash (same idempotency key, same attempt) schedules the same wait.
    assert backoff_delay(rules, 3, "r1:charge") == backoff_delay(rules, 3, "r1:charge")
    # Seeded from text, not from Python's per-process hash: the values are fixed.
    assert backoff_delay(rules, 3, "r1:charge") == pytest.approx(
        backoff_delay(policy(attempts=10, initial=2.0, jitter=0.5), 3, "r1:charge"))
    others = {backoff_delay(rules, 3, f"r{i}:charge") for i in range(2, 12)}
    assert backoff_delay(rules, 3, "r1:charge") not in others
    # Each attempt draws anew: the jitter factor is not one value for the whole run.
    factors = {backoff_delay(rules, n, "r1:charge") / (2.0 * 2 ** (n - 1))
               for n in range(1, 6)}
    assert len(factors) == 5


def test_jitter_does_not_depend_on_the_process() -> None:
    import subprocess
    import sys

    code = ("from concordia.definitions.models import Backoff, RetryPolicy\n"
            "from concordia.runtime.retry import backoff_delay\n"
            "p = RetryPolicy(attempts=5, backoff=Backoff(initial=2, factor=2, max=300,"
            " jitter=0.5))\n"
            "print(repr(backoff_delay(p, 3, 'r1:charge')))\n")
    rules = policy(attempts=5, initial=2.0, factor=2.0, jitter=0.5)
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60, env={"PYTHONHASHSEED": hashseed})
        assert float(out.stdout) == backoff_delay(rules, 3, "r1:charge")


AFTER_FAILURE = [
    # (attempts, failed attempt, error, expected delay or None, why)
    (3, 1, ValueError("x"), 1.0, "first failure of three: retry after initial"),
    (3, 2, ValueError("x"), 2.0, "second failure: the wait grows"),
    (3, 3, ValueError("x"), None, "the last attempt failed: give up"),
    (3, 4, ValueError("x"), None, "past the last attempt (a replay): give up"),
    (1, 1, ValueError("x"), None, "a single attempt is never retried"),
    (1, 1, RetryableError("x"), None, "not even a RetryableError"),
    (3, 1, PermanentError("x"), None, "a permanent error gives up at once"),
    (3, 1, TypeError("x"), None, "non-retryable by name gives up at once"),
    (3, 2, RateLimited("x"), 2.0, "a RetryableError is retried on the backoff"),
]


@pytest.mark.parametrize(("attempts", "attempt", "error", "expected", "why"), AFTER_FAILURE,
                         ids=[c[-1] for c in AFTER_FAILURE])
def test_after_failure(attempts: int, attempt: int, error: BaseException,
                       expected: float | None, why: str) -> None:
    rules = policy(attempts=attempts, non_retryable=("TypeError",))
    assert after_failure(rules, attempt, error, "r1:step") == expected, why


def test_after_failure_uses_the_seeded_backoff() -> None:
    rules = policy(attempts=5, initial=3.0, jitter=0.3)
    assert after_failure(rules, 2, ValueError(), "r9:ship") == backoff_delay(rules, 2, "r9:ship")
