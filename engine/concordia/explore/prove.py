"""``concordia prove``: every saga of a tree, every path within the bounds, each property
checked; what breaks one is a located problem (file:line of the step) with its shortest
counterexample.

A tree that does not load gives ``validate``'s problems (nothing is explored). Besides
the breaches, it reports as notes what a path leaves in place on purpose (steps that say
``compensate: none``, with their reason: accepted, never silent) and each saga's worst
case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import Saga
from concordia.definitions.problems import Problem
from concordia.explore.model import (
    Bounds,
    Exploration,
    LeftoverKind,
    PathRecord,
    PointKind,
    Violation,
)
from concordia.explore.properties import format_seconds
from concordia.explore.report import locate_step
from concordia.explore.search import Workbench


@dataclass
class Proof:
    """What proving a tree found."""

    problems: list[Problem] = field(default_factory=list)
    explorations: list[Exploration] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


def prove(catalog: Catalog, bounds: Bounds, sagas: Sequence[str] | None = None) -> Proof:
    """Explore every saga of ``catalog`` (or those named) and check every path."""
    proof = Proof()
    if catalog.errors:
        proof.problems = list(catalog.problems)
        return proof
    bench = Workbench(catalog)
    for saga in sorted(catalog.sagas.values(), key=lambda s: s.key):
        if sagas is not None and saga.name not in sagas:
            continue
        exploration = bench.explorer(saga, bounds).explore()
        proof.explorations.append(exploration)
        proof.problems += findings(catalog, saga, exploration)
    proof.problems.sort(key=Problem.sort_key)
    return proof


def findings(catalog: Catalog, saga: Saga, ex: Exploration) -> list[Problem]:
    """The located problems (and notes) of one saga's exploration."""
    out: list[Problem] = []
    for violation, path in ex.counterexamples:
        out.append(_problem(catalog, saga, violation, path))
    for violation in ex.static:
        out.append(_problem(catalog, saga, violation, None))
    accepted: dict[str, str] = {}
    for path in ex.complete_paths:
        for lo in path.leftovers:
            if lo.kind == LeftoverKind.DECLARED:
                accepted.setdefault(lo.step, lo.reason or "")
    for step, reason in accepted.items():
        line, column, pointer = locate_step(catalog, saga, step)
        out.append(Problem("prove-accepted-leftover", f"{saga.name}.{step}: may be left in "
                           f"place, as declared (reason: {reason})", saga.source, line,
                           column, pointer, "note"))
    line, column, pointer = locate_step(catalog, saga, None)
    out.append(Problem("prove-worst-case",
                       f"{saga.name} v{saga.version}: worst case "
                       f"{format_seconds(ex.worst_duration)} over {len(ex.paths)} paths "
                       f"(faults ≤ {ex.bounds.faults}, lists of {ex.bounds.items})",
                       saga.source, line, column, pointer, "note"))
    return out


def counterexample_words(path: PathRecord) -> str:
    """A counterexample's faults, and the branches it takes, in words."""
    faults = "; ".join(c.describe() for c in path.faults) or "no fault"
    branches = [c.describe() for c in path.choices
                if c.point.kind in (PointKind.CONDITION, PointKind.ITEMS)]
    return faults + (f" (with {', '.join(branches)})" if branches else "")


def _problem(catalog: Catalog, saga: Saga, violation: Violation,
             path: PathRecord | None) -> Problem:
    line, column, pointer = locate_step(catalog, saga, violation.step)
    extra: dict[str, str] = {}
    message = f"{saga.name}: {violation.message}"
    if path is not None:
        faults = counterexample_words(path)
        calls = ", ".join(c.describe() for c in path.calls) or "none"
        extra = {"faults": faults, "calls": calls, "ends": path.status,
                 "path": str(path.number)}
        message += f" — counterexample: {faults}; calls: {calls}; ends {path.status}"
    return Problem(f"prove-{violation.property}", message, saga.source, line, column,
                   pointer, "error", violation.hint, extra)
