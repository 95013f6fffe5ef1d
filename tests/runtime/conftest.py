"""Runtime fixtures: one behaviour suite over every store, small sagas in temp dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.testing import Faults, Harness
from tests.pg import drop_schema, new_schema, schema_url
from tests.runtime.blocking import BlockingEngine
from tests.runtime.sagas import load_catalog

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ENGINES = ["sync", "async"]


def store_url_for(kind: str, directory: Path) -> str:
    """A store of ``kind`` for one test: its own SQLite file, or its own PostgreSQL schema
    (dropped by the ``store_url`` fixture when the test ends)."""
    if kind == "memory":
        return "memory://"
    if kind == "postgres":
        return schema_url(new_schema())
    return f"sqlite:///{directory / 'runs.db'}"


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on the in-memory store, a SQLite file and a PostgreSQL schema."""
    url = store_url_for(request.param, tmp_path)
    yield url
    if request.param == "postgres":
        drop_schema(url.rsplit("schema=", 1)[1])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return store_url_for("sqlite", tmp_path)


@pytest.fixture
def catalog_of(tmp_path: Path) -> Callable[..., Catalog]:
    """Write saga documents (dicts or YAML text) into a temp dir and load them strictly."""
    counter = iter(range(1_000_000))

    def make(*docs: Mapping[str, Any] | str) -> Catalog:
        return load_catalog(*docs, directory=tmp_path / f"defs{next(counter)}")

    return make


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    """The same test, once on the sync engine and once on the async engine."""
    return str(request.param)


@pytest.fixture
def engine_for(store_url: str, clock: VirtualClock, engine_kind: str
               ) -> Iterator[Callable[..., Engine]]:
    """Build engines (sync, or async behind the sync API) on the test's store and virtual
    clock; close them afterwards."""
    engines: list[Any] = []

    def make(catalog: Catalog, registry: Registry, **kwargs: Any) -> Engine:
        kind = Engine if engine_kind == "sync" else BlockingEngine
        engine = kind(catalog, registry, kwargs.pop("store", store_url),
                      clock=kwargs.pop("clock", clock), **kwargs)
        engines.append(engine)
        return engine  # type: ignore[return-value]

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def harness_for(store_url: str, clock: VirtualClock) -> Iterator[Callable[..., Harness]]:
    """Build :class:`Harness` objects (call log, fault injection) on the test's store."""
    harnesses: list[Harness] = []

    def make(catalog: Catalog, registry: Registry, faults: Faults | None = None,
             **kwargs: Any) -> Harness:
        harness = Harness(catalog, registry, faults=faults, store=store_url, clock=clock,
                          **kwargs)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.engine.close()
