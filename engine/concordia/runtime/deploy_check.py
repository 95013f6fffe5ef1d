"""Definitions checked against a store before a deploy (``concordia validate --against-store``).

Runs are pinned to the saga version they started with, and the store keeps every version
runs have used. Two changes bite only at deploy time, and this finds both beforehand:

- a version edited in place (same name and version, another document): the engine refuses
  to start on it (``DefinitionChangedError``), because runs in flight would change course
  between one step and the next. An error; the fix is a new version number.
- a version removed from the definitions while runs are still in flight on it: the engine
  runs them from the stored document, so this is a warning, unless the handlers it names
  are not bound any more (``--handlers``), which strands those runs: an error.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.identity import definition_document, fingerprint
from concordia.definitions.models import ActionStep, Saga
from concordia.definitions.problems import Problem
from concordia.registry import Registry
from concordia.status import ACTIVE, HALTED
from concordia.store.base import Store

# Runs that will still move: active ones, and halted ones an operator may retry.
IN_FLIGHT = sorted({*ACTIVE, *HALTED})
_MAX_RUNS = 10_000_000


def runs_in_flight(store: Store) -> Counter[tuple[str, int]]:
    """(saga, version) -> how many runs pinned to it are still in flight."""
    counts: Counter[tuple[str, int]] = Counter()
    for status in IN_FLIGHT:
        for run in store.list_runs(status=status, limit=_MAX_RUNS):
            counts[(run.saga, run.version)] += 1
    return counts


def check_against_store(catalog: Catalog, store: Store,
                        registry: Registry | None = None) -> list[Problem]:
    """Every edited-in-place and removed-while-in-flight version (see the docstring)."""
    recorded = store.pin_definitions([])
    in_flight = runs_in_flight(store)
    problems: list[Problem] = []
    for key, saga in sorted(catalog.sagas.items()):
        pinned = recorded.get(key)
        if pinned is None or pinned == fingerprint(saga):
            continue
        stored = store.pinned_definition(*key) or {}
        runs = in_flight.get(key, 0)
        problems.append(Problem(
            "pinned-definition-changed",
            f"saga {saga.name} v{saga.version} was edited in place: {store.url} has runs "
            f"pinned to the recorded v{saga.version} ({runs} still in flight), and the "
            f"engine refuses to start on a changed version ({differences(stored, saga)})",
            saga.source or f"{saga.name} v{saga.version}",
            hint=f"give the change a new version (version: {saga.version + 1}) and keep "
                 f"v{saga.version} as it was"))
    for key in sorted(set(in_flight) - set(catalog.sagas)):
        name, version = key
        document = store.pinned_definition(name, version)
        unbound = _unbound(document, registry)
        runs = in_flight[key]
        if unbound:
            problems.append(Problem(
                "removed-version-unbound",
                f"saga {name} v{version} is no longer defined and {runs} run(s) are still in "
                f"flight on it, but handlers it calls are not registered: "
                f"{', '.join(unbound)}; those runs would be stranded",
                f"{name} v{version}",
                hint="keep those handlers registered until the runs end"))
        else:
            problems.append(Problem(
                "removed-version-in-flight",
                f"saga {name} v{version} is no longer defined but {runs} run(s) are still in "
                f"flight on it; they will finish from the copy {store.url} keeps",
                f"{name} v{version}", severity="warning",
                hint="keep its handlers registered until they end (concordia runs --saga "
                     f"{name} lists them)"))
    return problems


def differences(stored: dict[str, Any], saga: Saga) -> str:
    """What an in-place edit changed, in a few words."""
    current = definition_document(saga)
    old_steps = {s["name"]: s for s in stored.get("steps", [])}
    new_steps = {s["name"]: s for s in current.get("steps", [])}
    parts = [f"step {n} removed" for n in old_steps if n not in new_steps]
    parts += [f"step {n} added" for n in new_steps if n not in old_steps]
    parts += [f"step {n} changed" for n in new_steps
              if n in old_steps and old_steps[n] != new_steps[n]]
    if list(old_steps) != list(new_steps) and set(old_steps) == set(new_steps):
        parts.append("steps reordered")
    parts += [f"{k} changed" for k in sorted(set(stored) | set(current))
              if k != "steps" and stored.get(k) != current.get(k)]
    return ", ".join(parts) or "its document differs"


def _unbound(document: dict[str, Any] | None, registry: Registry | None) -> list[str]:
    """The handlers a stored saga document names that ``registry`` does not bind."""
    if document is None or registry is None:
        return []
    saga = Saga.model_validate(document)
    actions = set(registry.action_names())
    compensations = set(registry.compensation_names())
    missing: list[str] = []
    for step in saga.steps:
        if isinstance(step, ActionStep):
            if step.action not in actions:
                missing.append(step.action)
            if step.compensate is not None and step.compensate not in compensations:
                missing.append(step.compensate)
    return missing
