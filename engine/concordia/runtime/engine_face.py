"""What both engines answer without I/O: the definitions they run and the collaborators
they were built with, read from their :class:`~concordia.runtime.core.Core`.

:class:`~concordia.runtime.engine.Engine` and
:class:`~concordia.runtime.aengine.AsyncEngine` differ in how they carry out a flow
(in the calling thread, or on the event loop); these answers are the same in both, so
they are written once, here.
"""

from __future__ import annotations

from concordia.clock import Clock
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import Saga
from concordia.registry import Registry
from concordia.runtime.core import Core
from concordia.store.base import Store


class EngineFace:
    """The members both engines share; ``core`` is set by each engine's constructor."""

    core: Core

    @property
    def catalog(self) -> Catalog:
        """The definitions this engine was given (sagas, events, policies)."""
        return self.core.catalog

    @property
    def registry(self) -> Registry:
        return self.core.registry

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def clock(self) -> Clock:
        return self.core.clock

    @property
    def owner(self) -> str:
        """This engine's name in the leases it takes."""
        return self.core.config.owner

    def versions(self) -> dict[str, dict[int, Saga]]:
        """Every saga version this engine runs, by name and version."""
        return self.core.versions()

    def definition(self, saga: str, version: int | None = None) -> Saga:
        """A saga's definition (the latest version unless ``version`` is given)."""
        return self.core.book.saga(saga, version)

    def state_labels(self, saga: str, version: int) -> dict[str, str]:
        """The saga version's state names as its author would say them, by state."""
        return self.core.state_labels(saga, version)
