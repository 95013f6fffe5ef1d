"""The sagas an engine runs: each version compiled once, pinned in the store, indexed.

The book holds, per (saga, version), the compiled machine; per await step its compiled
match expression; per event type the awaits it may resume and the sagas it triggers. It
records every version in the store and refuses one edited in place after runs used it;
versions the store knows but the catalog no longer holds are compiled from the stored
document, so their runs finish on them.
"""

from __future__ import annotations

from concordia.definitions.catalog import Catalog
from concordia.definitions.identity import definition_document, fingerprint
from concordia.definitions.models import AwaitStep, Saga
from concordia.errors import BindingError, DefinitionChangedError, UnknownSagaError
from concordia.machine.compile import CompiledSaga, compile_saga
from concordia.registry import Registry
from concordia.runtime.matching import MatchSpec, compile_match
from concordia.store.base import Store


class SagaBook:
    """Compiled sagas and the indexes delivery needs, for one catalog and store."""

    def __init__(self, catalog: Catalog, store: Store) -> None:
        self.catalog = catalog
        self.compiled: dict[tuple[str, int], CompiledSaga] = {}
        self.matches: dict[tuple[str, int, str], MatchSpec] = {}
        self.awaiters: dict[str, list[tuple[str, int, str]]] = {}
        self.triggers: dict[str, list[Saga]] = {}
        for saga in [*catalog.sagas.values(), *self._pin(store)]:
            self.compiled[saga.key] = compile_saga(saga)
            for step in saga.steps:
                if isinstance(step, AwaitStep):
                    self.matches[(saga.name, saga.version, step.name)] = compile_match(step.match)
                    self.awaiters.setdefault(step.event, []).append(
                        (saga.name, saga.version, step.name))
        for name in {n for n, _ in catalog.sagas}:
            latest = catalog.saga(name)
            if latest.trigger is not None:
                self.triggers.setdefault(latest.trigger.event, []).append(latest)

    def _pin(self, store: Store) -> list[Saga]:
        """Record every saga version in the store; refuse versions changed in place.

        Returns the versions the store knows that the catalog no longer holds: runs that
        started on them finish on them, even after their YAML is gone.
        """
        pins = [(s.name, s.version, fingerprint(s), definition_document(s))
                for s in self.catalog.sagas.values()]
        recorded = store.pin_definitions(pins)
        # A read-only store records nothing: a version it has not seen is not a change.
        changed = [(n, v) for n, v, fp, _ in pins
                   if recorded.get((n, v), fp if store.readonly else None) != fp]
        if changed:
            raise DefinitionChangedError(changed)
        extra = []
        for name, version in sorted(set(recorded) - set(self.catalog.sagas)):
            document = store.pinned_definition(name, version)
            if document is not None:
                extra.append(Saga.model_validate(document))
        return extra

    def saga(self, name: str, version: int | None = None) -> Saga:
        """A saga by name (the latest version unless ``version`` is given)."""
        if version is not None and (name, version) in self.compiled:
            # also versions known only from the store (runs outlive their YAML)
            return self.compiled[(name, version)].saga
        try:
            return self.catalog.saga(name, version)
        except KeyError:
            raise UnknownSagaError(name, [n for n, _ in self.catalog.sagas], version) from None

    def of(self, saga: str, version: int) -> CompiledSaga:
        """The compiled version a run is pinned to."""
        try:
            return self.compiled[(saga, version)]
        except KeyError:
            raise UnknownSagaError(saga, [n for n, _ in self.catalog.sagas], version) from None

    def check_bindings(self, registry: Registry) -> None:
        """Refuse to run unless every handler the current definitions name is registered."""
        bound = {"action": set(registry.action_names()),
                 "compensation": set(registry.compensation_names())}
        missing = [(kind, name, f"{saga.name} v{saga.version} step {saga.steps[i].name}")
                   for kind, name, saga, i in self.catalog.handler_uses()
                   if name not in bound[kind]]
        if missing:
            raise BindingError(missing)
