"""The SQLite store, the embedded default: the SQL journal on one file (see
:mod:`concordia.store.sql.sqlite` for the dialect, :mod:`concordia.store.sqlite_schema`
for the schema and its migrations, applied on open).

Each public write is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so a process
killed at any point leaves either the whole transition or none of it;
:meth:`~concordia.store.sql.journal.SqlStore.write_batch` runs several writes in one
transaction and one ``fsync``. Reads use a connection of their own, so they never wait
behind a write's ``fsync``. It offers :class:`~concordia.store.base.Batching` (the group
commit) and :class:`~concordia.store.base.RunQueries`; workers sharing a file find due
runs by asking (:meth:`due_runs`), as nothing on one file can tell them.
"""

from __future__ import annotations

from concordia.store.sql.journal import SqlStore
from concordia.store.sql.sqlite import TAIL_LIMIT, SqliteDialect
from concordia.store.sqlite_schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "TAIL_LIMIT", "SqliteStore"]


class SqliteStore(SqlStore):
    """A :class:`~concordia.store.base.Store` on one SQLite file, ``sqlite:///path``."""

    def __init__(self, url: str, *, synchronous: str = "FULL", readonly: bool = False,
                 busy_timeout: float = 30.0) -> None:
        self.sqlite = SqliteDialect(url, synchronous=synchronous, readonly=readonly,
                                    busy_timeout=busy_timeout)
        self.path = self.sqlite.path
        self._conn = self.sqlite.conn  # the write connection (tests inspect its settings)
        super().__init__(url, self.sqlite, readonly=readonly)

    def schema_version(self) -> int:
        return self.sqlite.read(self.sqlite.schema_version)
