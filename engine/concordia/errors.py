"""The exception hierarchy every Concordia error belongs to.

    ConcordiaError
    ├── DefinitionError          a definition tree has problems (carries them all)
    ├── DefinitionChangedError   a saga version was edited in place after runs used it
    ├── BindingError             handlers named by definitions are not registered
    ├── UnknownSagaError         no saga of that name (and version) is loaded
    ├── UnknownRunError          no run with that id in the store
    ├── StoreError               the journal could not be opened or written
    │   └── ValueRefusedError    the store refused a value a write carried (not an outage)
    ├── ExpressionError          a CEL expression failed to compile or evaluate
    ├── ValueLimitError          a value is not JSON data within the limits (too deep, ...)
    ├── EventError               an event envelope or payload is not valid
    ├── InputError               a run's input does not fit the saga's input schema
    ├── PolicyError              a policy could not be evaluated (never an approval)
    ├── HandlerError             raised by handlers to steer retries
    │   ├── RetryableError       worth another attempt
    │   └── PermanentError       retrying cannot help; fail the step now
    ├── ChildSagaError           a child saga ended without completing (fails its step)
    └── IllegalTransitionError   the compiled machine forbids the requested move

Each carries structured attributes so callers need not parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concordia.definitions.problems import Problem


class ConcordiaError(Exception):
    """Base class of every error Concordia raises on purpose."""


class DefinitionError(ConcordiaError):
    """A definition tree failed validation; ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = [p.format_text() for p in self.problems[:20]]
        more = len(self.problems) - 20
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            f"{len(self.problems)} problem(s) in the definitions:\n" + "\n".join(lines)
        )


class BindingError(ConcordiaError):
    """Handler names used by the definitions that the registry does not bind."""

    def __init__(self, missing: Sequence[tuple[str, str, str]]) -> None:
        # (kind, handler name, where it is used)
        self.missing = list(missing)
        lines = [f"  {kind} {name!r} (used by {where})" for kind, name, where in self.missing]
        super().__init__(
            f"{len(self.missing)} handler(s) not registered:\n"
            + "\n".join(lines)
            + "\nRegister them with @registry.action(name) / @registry.compensation(name)."
        )


class UnknownSagaError(ConcordiaError):
    def __init__(self, name: str, known: Sequence[str], version: int | None = None) -> None:
        self.name = name
        self.version = version
        what = name if version is None else f"{name} v{version}"
        super().__init__(f"no saga {what!r} is loaded; known: {', '.join(sorted(known)) or 'none'}")


class UnknownRunError(ConcordiaError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the store")


class StoreError(ConcordiaError):
    """The journal could not be opened, migrated or written."""


class ValueRefusedError(StoreError):
    """The store refused a value that a write carried (text PostgreSQL cannot hold, an
    invalid encoding): the fault of the write, not of the store. Values are checked
    before any store sees them (:func:`concordia.values.check_text`), so this is the last
    line of defence: the run that wrote it fails its step, or is parked ``stuck``, and is
    never retried in a loop as it would be for an outage."""


class ExpressionError(ConcordiaError):
    def __init__(self, expression: str, message: str) -> None:
        self.expression = expression
        super().__init__(f"expression {expression!r}: {message}")


class ValueLimitError(ConcordiaError):
    """A value is not JSON data within :class:`concordia.values.Limits`.

    ``what`` names the value (``"step charge result"``), ``reason`` says what is wrong
    and ``path`` is the JSON pointer (RFC 6901) of the offending place, ``""`` for the
    value itself.
    """

    def __init__(self, what: str, reason: str, path: str) -> None:
        self.what = what
        self.reason = reason
        self.path = path
        super().__init__(f"{what}: {reason} at {_display_pointer(path)}")


def _display_pointer(path: str, limit: int = 60) -> str:
    if not path:
        return "the top level"
    if len(path) <= limit:
        return path
    # Keep whole segments: /a/b/c/... reads better than a segment cut in half.
    head = path[:limit]
    cut = head.rfind("/")
    return (head[:cut] if cut > 0 else head) + "/..."


class EventError(ConcordiaError):
    """An event (envelope or payload) does not match the taxonomy."""

    def __init__(self, message: str, *, event_type: str | None = None,
                 field: str | None = None) -> None:
        self.event_type = event_type
        self.field = field
        super().__init__(message)


class PolicyError(ConcordiaError):
    """A policy could not be evaluated; this is never treated as an approval."""

    def __init__(self, policy: str, message: str) -> None:
        self.policy = policy
        super().__init__(f"policy {policy!r}: {message}")


class HandlerError(ConcordiaError):
    """Raised by handlers to tell the engine how to treat a failure.

    The journal keeps, besides the message, what identifies the failure for people and
    for ``catch`` tables (problem details, as RFC 9457 has them): ``type`` (a name or URI;
    default the class name), ``title`` (a short summary of the type), ``status`` (an
    HTTP-like code) and ``details`` (a mapping of JSON data).
    """

    def __init__(self, message: str = "", *, details: Any = None, type: str | None = None,
                 title: str | None = None, status: int | None = None) -> None:
        self.details = details
        self.type = type
        self.title = title
        self.status = status
        super().__init__(message)


class RetryableError(HandlerError):
    """A transient failure: the step's retry policy decides the next attempt."""


class PermanentError(HandlerError):
    """Retrying cannot help: the step fails now, whatever its retry policy says."""


class ChildSagaError(ConcordiaError):
    """A child saga's run ended without completing; the parent's step fails with it."""

    def __init__(self, saga: str, run_id: str, status: str, error: str | None) -> None:
        self.saga = saga
        self.run_id = run_id
        self.status = status
        self.error = error
        super().__init__(f"child saga {saga} (run {run_id}) ended {status}"
                         + (f": {error}" if error else ""))

    def to_problem(self) -> dict[str, Any]:
        return {"type": "ChildSagaError", "title": f"child saga {self.status}",
                "detail": str(self), "details": {"saga": self.saga, "run_id": self.run_id,
                                                 "status": self.status, "error": self.error}}


class IllegalTransitionError(ConcordiaError):
    def __init__(self, saga: str, state: str, event: str) -> None:
        self.saga = saga
        self.state = state
        self.event = event
        super().__init__(f"saga {saga!r}: no transition {event!r} from state {state!r}")


class InputError(ConcordiaError):
    """A run's input does not fit the saga's input schema."""

    def __init__(self, saga: str, message: str, field: str | None) -> None:
        self.saga = saga
        self.field = field
        super().__init__(f"saga {saga!r}: input {message}")



class DefinitionChangedError(ConcordiaError):
    """Saga versions whose definition differs from the one runs in the store started with."""

    def __init__(self, changed: Sequence[tuple[str, int]]) -> None:
        self.changed = list(changed)
        names = ", ".join(f"{n!r} version {v}" for n, v in self.changed)
        super().__init__(
            f"saga {names} changed since runs in this store started with it; runs in "
            "flight would switch definitions between steps. Give the changed saga a new "
            "`version:` (runs in flight keep the old one) or restore the old text.")
