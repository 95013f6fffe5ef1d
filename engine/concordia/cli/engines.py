"""Engines for the run commands: read-only ones that never create a store, writers that
never create a directory, and run ids given by unique prefix.

A command that only reads (``runs``, ``inspect``, ``graph --run``) opens the store
read-only and needs no definitions: a run is pinned to the saga version it started
with, which the store keeps, so an empty catalog is enough to show it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from concordia.cli.common import UsageError, definition_paths, load_handlers, open_store_for

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog
    from concordia.definitions.models import Saga
    from concordia.runtime.engine import Engine


# A prefix shorter than this names a run only by accident (as git's abbreviated ids).
MIN_PREFIX = 4


def reader(store_url: str) -> Engine:
    """An engine over the store opened read-only: it writes nothing, creates nothing."""
    from concordia.definitions.catalog import Catalog
    from concordia.logging import ensure_configured
    from concordia.registry import Registry
    from concordia.runtime.engine import Engine

    ensure_configured()
    store = open_store_for(store_url, readonly=True)
    try:
        return Engine(Catalog(), Registry(), store, check_bindings=False)
    except BaseException:
        store.close()
        raise


def writer(store_url: str, paths: Sequence[str] | None, handlers: str | None,
           catalog: Catalog | None = None) -> Engine:
    """An engine that may write: definitions loaded strictly (unless ``catalog`` is given,
    already loaded so), handlers bound if named."""
    from concordia.logging import ensure_configured
    from concordia.registry import Registry
    from concordia.runtime.engine import Engine

    ensure_configured()
    catalog = catalog or load_definitions(paths)
    registry = load_handlers(handlers) if handlers else Registry()
    check_store_parent(store_url)
    store = open_store_for(store_url, readonly=False)
    try:
        # Runs it starts are leased to this process only if it drives them (it has the
        # handlers); otherwise they are left to the workers at once.
        return Engine(catalog, registry, store, check_bindings=handlers is not None,
                      claim_new_runs=handlers is not None)
    except BaseException:
        store.close()
        raise


def load_definitions(paths: Sequence[str] | None) -> Catalog:
    """The definitions, all of them valid; otherwise a usage error that says how many
    problems there are and where to see them."""
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(definition_paths(paths))
    if catalog.errors:
        first = catalog.errors[0].format_text()
        raise UsageError(f"the definitions have {len(catalog.errors)} problem(s), the first: "
                         f"{first}; `concordia validate` lists them all")
    return catalog


def check_store_parent(url: str) -> None:
    """A store is created only in a directory that exists: a typo in ``--store`` must not
    leave a new directory tree behind."""
    if not url.startswith("sqlite:"):
        return
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"store {url}: directory {parent} does not exist")


def resolve_run_id(engine: Engine, given: str) -> str:
    """The run id ``given`` names in full or by a unique prefix."""
    from concordia.values import is_id

    found = engine.store.find_run_ids(given, 6) if is_id(given) else []
    if given in found:
        return given
    if len(given) < MIN_PREFIX:
        raise UsageError(f"run id {given!r} is too short to name a run; give at least "
                         f"{MIN_PREFIX} characters of it")
    if not found:
        raise UsageError(f"no run {given!r} in {engine.store.url} (no run id starts with it)")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
        raise UsageError(f"run id {given!r} is ambiguous: it starts {shown}; give more of it")
    return found[0]


def saga_of(engine: Engine, name: str, version: int, catalog: Catalog | None = None) -> Saga | None:
    """The definition a run is pinned to: the store's copy, else the catalog's."""
    from concordia.definitions.models import Saga

    document = engine.store.pinned_definition(name, version)
    if document is not None:
        return Saga.model_validate(document)
    for source in (catalog, engine.catalog):
        if source is not None and (name, version) in source.sagas:
            return source.sagas[(name, version)]
    return None
