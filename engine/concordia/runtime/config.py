"""An engine's settings, in one place, with their documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict

from concordia.clock import Clock
from concordia.events.bus import Bus
from concordia.runtime.liveness import worker_name

DEFAULT_STEP_TIMEOUT = 60.0
DEFAULT_LEASE_TTL = 30.0
DEFAULT_HANDLER_THREADS = 16  # the pool sync handlers of a parallel stage run in


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How an engine runs.

    - ``source``: the CloudEvents ``source`` of the events its runs emit.
    - ``early_event_ttl``: seconds an event nothing awaits yet is kept for a run that
      reaches a matching await later (a callback faster than its saga).
    - ``step_timeout``: the timeout of every attempt (action or compensation) whose step
      and saga set none.
    - ``lease_ttl``: how long a worker's claim on a run lasts without renewal; a worker
      renews its leases while handlers run, so this bounds how soon another worker carries
      on the runs of one that died.
    - ``owner``: this worker's name in leases (by default one that says where the worker
      runs, so that a worker on the same machine can tell at once when it has died: see
      :mod:`concordia.runtime.liveness`).
    - ``claim_new_runs``: runs this engine creates (``start``, triggered by ``deliver``) are
      leased to it in their creating commit, with their first actions marked started, so
      its next pass runs them without another commit. An engine that starts runs for
      other workers to run (an HTTP API, an event consumer) should not claim them. The
      default (None) claims them in the sync engine, and in the async engine while its
      ``work()`` runs.
    """

    source: str = "urn:concordia"
    early_event_ttl: float = 3600.0
    step_timeout: float = DEFAULT_STEP_TIMEOUT
    lease_ttl: float = DEFAULT_LEASE_TTL
    owner: str = field(default_factory=worker_name)
    claim_new_runs: bool | None = None

    def __post_init__(self) -> None:
        if self.step_timeout <= 0 or self.lease_ttl <= 0:
            raise ValueError("step_timeout and lease_ttl must be positive")

    @classmethod
    def of(cls, options: Options) -> EngineConfig:
        """The ``config`` among an engine's options (or the defaults), with the settings
        given one by one changed."""
        changes: dict[str, Any] = {k: v for k, v in options.items() if k in _FIELDS}
        return replace(options.get("config") or cls(), **changes)


class Settings(TypedDict, total=False):
    """The settings an engine takes as keyword arguments: :class:`EngineConfig`'s fields,
    typed, so that a misspelt one (``lease_tll=5``) is an error mypy reports."""

    source: str
    early_event_ttl: float
    step_timeout: float
    lease_ttl: float
    owner: str
    claim_new_runs: bool | None


class Options(Settings, total=False):
    """Everything an engine takes beside its catalog, registry and store, as keyword
    arguments: its clock, its bus, whether to check the handlers the definitions name
    are registered, the size of its pool of threads for sync handlers, and its settings
    (a whole ``config``, or its fields one by one)."""

    clock: Clock | None
    bus: Bus | None
    check_bindings: bool
    handler_threads: int
    config: EngineConfig | None


_FIELDS = frozenset(f.name for f in fields(EngineConfig))
