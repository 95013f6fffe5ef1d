"""The errors a step's attempt may fail with, as the explorer raises them, and the options
of each kind of choice point.

A step can tell errors apart only by the names its retry policy and its catch table give
(class names, problem types, status codes); the explorer makes one exception for each
name they use, plus one none of them names, and keeps one of each *behaviour*: errors
that are retried alike and taken by the same catch entry lead to the same paths. Which
is which is decided by the engine's own functions (:func:`~concordia.runtime.retry.is_retryable`,
:func:`~concordia.runtime.catching.matching_entry`), never by a copy of their rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from concordia.definitions.models import ActionStep, RetryPolicy, Saga
from concordia.errors import PermanentError, RetryableError
from concordia.explore.model import Act, Option
from concordia.runtime.catching import matching_entry
from concordia.runtime.planner import retry_policy
from concordia.runtime.problem import problem_of
from concordia.runtime.retry import is_retryable

UNNAMED = "UnexpectedError"  # an error no retry policy or catch entry names
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SPECIAL: dict[str, type[Exception]] = {"RetryableError": RetryableError,
                                        "PermanentError": PermanentError}


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One behaviour of failure: the name it is shown by and how to raise it."""

    name: str
    make: Callable[[], Exception]
    retryable: bool


def error_class(name: str | int) -> Callable[[], Exception]:
    """An exception the engine tells apart by ``name``: a class of that name (in that
    module, for a dotted one), an error whose problem details carry that status code, or
    whose problem type is that text."""
    if isinstance(name, int):
        cls = type(f"Status{name}Error", (Exception,), {
            "to_problem": lambda self: {"status": name, "detail": str(self)}})
        return lambda: cls(f"explored: an error with status {name}")
    if _DOTTED.match(name):
        module, _, short = name.rpartition(".")
        base = _SPECIAL.get(short, Exception)
        cls = type(short, (base,), {"__module__": module or __name__})
        return lambda: cls(f"explored: {name}")
    cls = type("ProblemError", (Exception,), {
        "to_problem": lambda self: {"type": name, "title": name, "detail": str(self)}})
    return lambda: cls(f"explored: {name}")


def error_kinds(saga: Saga, step: ActionStep) -> list[ErrorKind]:
    """The distinct behaviours of a failure of ``step``'s attempts (see the docstring)."""
    policy = retry_policy(saga, step)
    names: list[str | int] = [e for clause in step.catch for e in clause.errors]
    names += [*policy.retryable, *policy.non_retryable]
    seen: dict[tuple[bool, int | None], ErrorKind] = {}
    for name in [*dict.fromkeys(n for n in names if n != "*"), UNNAMED]:
        make = error_class(name)
        sample = make()
        retryable = policy.attempts > 1 and is_retryable(policy, sample)
        signature = (retryable, matching_entry(step.catch, sample, problem_of(sample)))
        if signature not in seen:
            seen[signature] = ErrorKind(str(name), make, retryable)
    return list(seen.values())


def action_options(kinds: list[ErrorKind], policy: RetryPolicy, attempt: int,
                   *, crash: bool, cancel: bool) -> list[Option]:
    """An action attempt's options: it succeeds; it fails before or after its effect with
    each kind of error (a retried one once, or on every attempt left); the worker dies
    after its effect; a cancel arrives while it runs."""
    options = [Option(Act.OK, "succeeds")]
    retries_left = attempt < policy.attempts
    for kind in kinds:
        for after in (False, True):
            where = "after its effect" if after else "before its effect"
            if kind.retryable and retries_left:
                options.append(Option(Act.FAIL, f"fails {where} ({kind.name}), then is "
                                                 "retried", True, kind.name, after))
                options.append(Option(Act.FAIL, f"fails {where} ({kind.name}) on every "
                                                 "attempt left", True, kind.name, after,
                                      sticky=True))
            else:
                options.append(Option(Act.FAIL, f"fails {where} ({kind.name})", True,
                                      kind.name, after, sticky=True))
    if crash:
        options.append(Option(Act.CRASH, "the worker dies after its effect", True))
    if cancel:
        options.append(Option(Act.CANCEL, "a cancel arrives while it runs", True))
    return options


def compensation_options(policy: RetryPolicy, attempt: int) -> list[Option]:
    """A compensation attempt's options: it succeeds, fails once and is retried, or fails
    on every attempt left (the run ends compensation_failed)."""
    options = [Option(Act.OK, "succeeds")]
    if attempt < policy.attempts:
        options.append(Option(Act.FAIL, "fails, then is retried", True, "RetryableError"))
        options.append(Option(Act.FAIL, "fails on every attempt left", True,
                              "RetryableError", sticky=True))
    else:
        options.append(Option(Act.FAIL, "fails", True, "RetryableError", sticky=True))
    return options


def compensation_error() -> Exception:
    return RetryableError("explored: the compensation fails")
