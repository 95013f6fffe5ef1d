"""The contract suite's fixtures: every test runs on the in-memory store, a SQLite file and
a PostgreSQL schema (a store passes it or is not a store)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from concordia.store import open_store
from concordia.store.base import Store
from concordia.store.memory import MemoryStore
from tests.pg import PG_BASE, drop_schema, new_schema, schema_url

KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SQL_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

Opener = Callable[[], Store]


class Where:
    """Where one test's store lives, and how to open it again (another connection)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.schema = new_schema() if kind == "postgres" else None
        self.url = ("memory://" if kind == "memory" else
                    schema_url(self.schema) if self.schema else
                    f"sqlite:///{tmp_path / 'runs.db'}")
        self.opened: list[Store] = []
        self.shared: Store | None = None

    def open(self) -> Store:
        """The store anew (for memory, the one store: it lives in this process only)."""
        if self.kind == "memory":
            if self.shared is None:
                self.shared = MemoryStore()
            return self.shared
        store = open_store(self.url)
        self.opened.append(store)
        return store

    def break_table(self, table: str) -> None:
        """Make every insert into ``table`` fail, as a database failing mid-write would."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            conn.execute(f"CREATE TRIGGER broken BEFORE INSERT ON {table} "
                         "BEGIN SELECT RAISE(ABORT, 'broken'); END")
            conn.commit()
            conn.close()
        elif self.kind == "postgres":
            import psycopg

            with psycopg.connect(PG_BASE, autocommit=True) as pg:
                pg.execute(f'SET search_path = "{self.schema}"'.encode())
                pg.execute(b"CREATE FUNCTION broken() RETURNS trigger AS "
                           b"$$ BEGIN RAISE EXCEPTION 'broken'; END $$ LANGUAGE plpgsql")
                pg.execute(f"CREATE TRIGGER broken BEFORE INSERT ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION broken()".encode())
        else:
            pytest.skip("nothing can fail inside the in-memory store's writes")

    def close(self) -> None:
        for store in self.opened:
            store.close()
        if self.schema is not None:
            drop_schema(self.schema)


@pytest.fixture(params=KINDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    place = Where(str(request.param), tmp_path)
    yield place
    place.close()


@pytest.fixture
def store(where: Where) -> Store:
    return where.open()


@pytest.fixture(params=SQL_KINDS)
def sql_where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    place = Where(str(request.param), tmp_path)
    yield place
    place.close()
