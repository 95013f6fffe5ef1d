"""The failure-path explorer: every path of a saga, worked out before it runs.

It drives the engine's own flows (:mod:`concordia.runtime.core`) on a memory store and a
clock of its own, a third driver beside ``drive`` and ``adrive``, where an oracle decides
what the world does at each place it decides (:mod:`concordia.explore.world`); a
depth-first search replays prefixes of those choices (:mod:`concordia.explore.search`);
:mod:`concordia.explore.properties` says what a path breaks. ``concordia simulate``,
``concordia prove`` and :func:`concordia.testing.explore` are built on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concordia.explore.model import (
    Bounds,
    Call,
    Choice,
    Exploration,
    Leftover,
    PathRecord,
    Property,
    Violation,
)
from concordia.explore.search import Explorer, Workbench

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog

__all__ = ["Bounds", "Call", "Choice", "Exploration", "Explorer", "Leftover", "PathRecord",
           "Property", "Violation", "Workbench", "explore"]


def explore(catalog: Catalog, saga: str, bounds: Bounds | None = None,
            version: int | None = None) -> Exploration:
    """Every path of ``saga`` (its latest version unless ``version``) within ``bounds``."""
    definition = catalog.saga(saga, version)
    return Workbench(catalog).explorer(definition, bounds or Bounds()).explore()
