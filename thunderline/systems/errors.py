"""Errors the simulated external systems raise, shaped like a remote API's failures.

The systems know nothing of Concordia; the handlers translate these into the engine's
``RetryableError`` / ``PermanentError``. ``Unavailable`` also subclasses
``ConnectionError`` so that a saga's ``retryable: [ConnectionError]`` treats it as
transient even when a caller lets it through untranslated.
"""

from __future__ import annotations


class ExternalSystemError(Exception):
    """Base class of every failure a simulated system reports."""

    def __init__(self, system: str, message: str) -> None:
        self.system = system
        super().__init__(f"{system}: {message}")


class Unavailable(ExternalSystemError, ConnectionError):
    """A transient failure (timeout, 503, dropped connection): worth another attempt."""


class Rejected(ExternalSystemError):
    """The system refused the request; repeating it cannot succeed."""


class NotFound(Rejected):
    """The request names something the system does not have."""


class InjectedFailure(Unavailable):
    """A failure planted by the failure plan (tests and the demo), transient by default."""

    def __init__(self, operation: str, item: int) -> None:
        self.operation = operation
        self.item = item
        system = operation.split(".", 1)[0]
        super().__init__(system, f"injected failure in {operation} after {item} item(s)")
