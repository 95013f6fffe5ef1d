"""Who a request is and what it may do: scopes, the principal a credential names, and the
refusal when it names none.

Two scopes, each its own grant (neither implies the other):

- ``concordia.read``: everything that shows data — runs, sagas, their diagrams and
  YAML, the metrics, the OpenAPI document.
- ``concordia.operate``: what changes runs — start (``POST /runs``), cancel and retry.

A dashboard gets ``concordia.read``; a person or a system that also starts and repairs
runs gets both; a system that only starts runs may get ``concordia.operate`` alone (it
sees the runs it starts in the answers). The same names are the ``scope`` values of an
API token and of a JWT's ``scope``/``scp`` claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from concordia.errors import ConcordiaError


class Scope(StrEnum):
    READ = "concordia.read"
    OPERATE = "concordia.operate"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a credential: ``name`` is what the log shows (``token:<id>``,
    ``jwt:<subject>``, ``anonymous`` when the server runs without authentication),
    never the credential itself."""

    name: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal("anonymous", ALL_SCOPES)


class AuthError(ConcordiaError):
    """A request's credential is missing, malformed, unknown, expired or for another
    audience; ``reason`` is one of ``missing``, ``invalid_token``, ``expired_token``
    (the metric's label), ``principal`` what a log may name (a key id, a subject)."""

    def __init__(self, reason: str, message: str, principal: str | None = None) -> None:
        self.reason = reason
        self.principal = principal
        super().__init__(message)


def scopes_named(names: object) -> frozenset[Scope]:
    """The known scopes among ``names`` (a space-separated string or a list of strings,
    as OAuth's ``scope`` and Microsoft's ``scp`` claims carry them); others are ignored."""
    if isinstance(names, str):
        items: list[object] = list(names.split())
    elif isinstance(names, list):
        items = list(names)
    else:
        return frozenset()
    known = {s.value: s for s in Scope}
    return frozenset(known[i] for i in items if isinstance(i, str) and i in known)
