"""The journal behind one protocol, chosen by URL: ``memory://``, ``sqlite:///path``,
``postgresql://host/db``."""

from __future__ import annotations

from concordia.errors import StoreError
from concordia.store.base import ConflictError, Store
from concordia.store.memory import MemoryStore

__all__ = ["ConflictError", "MemoryStore", "Store", "open_store"]


def open_store(url: str, *, readonly: bool = False) -> Store:
    """Open the store a URL names (``sqlite:///runs.db``, ``sqlite:///:memory:``,
    ``postgresql://host/db[?schema=NAME]``, ``memory://``).

    ``readonly`` opens an existing store for reading only: it is never created or
    migrated, and a missing one is a :class:`StoreError` naming it.
    """
    if url.startswith("memory:"):
        if readonly:
            raise StoreError(f"{url}: an in-memory store holds nothing to read")
        return MemoryStore(url)
    if url.startswith("sqlite:"):
        from concordia.store.sqlite import SqliteStore

        store: Store = SqliteStore(url, readonly=readonly)
        return store
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from concordia.store.postgres import PostgresStore
        except ImportError as exc:  # the optional extra is not installed
            raise StoreError(f"{url}: the PostgreSQL store needs psycopg and psycopg_pool "
                             f"(pip install 'concordia-sagas[postgres]'): {exc}") from None
        return PostgresStore(url, readonly=readonly)
    raise StoreError(f"unknown store URL {url!r}; use sqlite:///path.db, "
                     "postgresql://host/db or memory://")
