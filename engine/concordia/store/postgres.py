"""The PostgreSQL store: many workers on many machines share one journal (the SQL journal
over :mod:`concordia.store.sql.postgres`; the schema and its migrations in
:mod:`concordia.store.postgres_schema`, applied on open).

Beside what every store does, it offers :class:`~concordia.store.base.Claiming` — workers
take due runs with ``FOR UPDATE SKIP LOCKED``, their lease set in the same statement, so
two workers never pick the same run and neither waits for the other — and
:class:`~concordia.store.base.Listening`: whatever makes a run due for any worker (a run
created unclaimed, an event resuming one, a cancellation, a released lease) sends a
``NOTIFY`` in its transaction; workers listen and also poll, so a lost notification costs
latency, never a run.

The async engine drives it as it drives SQLite's (:mod:`concordia.store.aio`): reads on a
few threads, the writes of runs in flight grouped by one writer thread into one
transaction. Writing on two or three connections at once (so that one batch's wait for
its commit overlaps the next) measured no faster on a 2-core machine and costs memory
per worker.

The URL is a libpq one (``postgresql://host/db``), with an optional ``schema=NAME``
query parameter: the store then lives in that schema (created if missing), which lets
many stores (tests, tenants) share one database without seeing each other's rows.
"""

from __future__ import annotations

from collections.abc import Callable

from concordia.store.changes import Claim
from concordia.store.postgres_schema import SCHEMA_VERSION
from concordia.store.sql.journal import SqlStore
from concordia.store.sql.postgres import CHANNEL, PostgresDialect, split_url

__all__ = ["CHANNEL", "SCHEMA_VERSION", "PostgresStore", "split_url"]


class PostgresStore(SqlStore):
    """A :class:`~concordia.store.base.Store` on a PostgreSQL database (see the module
    docstring), ``postgresql://host/db[?schema=NAME]``."""

    def __init__(self, url: str, *, readonly: bool = False, pool_size: int = 6,
                 connect_timeout: float = 10.0) -> None:
        self.postgres = PostgresDialect(url, readonly=readonly, pool_size=pool_size,
                                        connect_timeout=connect_timeout)
        self.schema = self.postgres.schema
        super().__init__(url, self.postgres, readonly=readonly)

    def schema_version(self) -> int:
        return self.postgres.read(self.postgres.schema_version)

    def claim_due(self, claim: Claim) -> list[str]:
        """Lease to the claimer up to ``claim.limit`` runs with work now (as
        :meth:`due_runs` orders them), passing over rows another worker has locked.

        The lease is set without a new revision: the pass that follows takes it over in
        its first commit, which is checked against the revision its writer read.
        """
        return self._claim(claim)

    def listen(self, on_due: Callable[[], None]) -> Callable[[], None]:
        return self.postgres.listen(on_due)
