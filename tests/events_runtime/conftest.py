"""Shared helpers: definitions written into a temporary tree, engines on each store."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia import Catalog, Engine, InMemoryBus, Registry, VirtualClock
from tests.pg import drop_schema, schema_url

ROOT = str(Path(__file__).resolve().parents[2])
STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
_SCHEMAS: list[str] = []  # made by store_url for the running test; dropped after it


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> YAML text, dedented) under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


def load(root: Path, *, strict: bool = True) -> Catalog:
    if strict:
        return Catalog.load_strict([str(root)])
    return Catalog.load([str(root)])


def store_url(kind: str, tmp_path: Path, name: str = "runs.db") -> str:
    if kind == "memory":
        return "memory://"
    if kind == "postgres":  # one schema per test and name, the same each time asked
        schema = "t_" + hashlib.sha256(str(tmp_path / name).encode()).hexdigest()[:16]
        if schema not in _SCHEMAS:
            _SCHEMAS.append(schema)
        return schema_url(schema)
    return f"sqlite:///{tmp_path / name}"


class Calls:
    """What handlers saw: (name, context fields) in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def add(self, name: str, ctx: Any, **extra: Any) -> None:
        seen = {"run_id": ctx.run_id, "correlation_id": ctx.correlation_id,
                "causation_id": ctx.causation_id, "idempotency_key": ctx.idempotency_key,
                "input": ctx.input, **extra}
        if hasattr(ctx, "result"):
            seen["result"] = ctx.result
            seen["completed"] = ctx.completed
        self.calls.append((name, seen))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [c for n, c in self.calls if n == name]


EngineFactory = Callable[..., Engine]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)
    while _SCHEMAS:
        drop_schema(_SCHEMAS.pop())


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines made by a test; closed after it."""
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def make_engine(made: list[Engine], catalog: Catalog, registry: Registry, url: str,
                **kwargs: Any) -> Engine:
    kwargs.setdefault("clock", VirtualClock())
    kwargs.setdefault("bus", InMemoryBus())
    engine = Engine(catalog, registry, url, **kwargs)
    made.append(engine)
    return engine
