"""The PostgreSQL store as the async engine uses it: writes on several lanes at once.

On SQLite one writer thread is right: the file takes one write transaction at a time, and
grouping the writes of runs in flight into it shares one ``fsync``. PostgreSQL takes many
transactions at once and already shares a WAL flush among the commits that arrive
together, so here the writes of runs in flight go to several group writers (lanes), each
a thread with a connection of its own, taken in turn: a lane's commit waiting on the WAL
no longer holds up the others. Each lane still groups what queues behind it.

Why threads over the store's sync methods rather than ``psycopg_pool.AsyncConnectionPool``:
the store's SQL is written once and shared by the sync engine, the command line and this;
the lanes keep group commit; psycopg releases the GIL while it waits on the server, so the
lanes' I/O overlaps as coroutines' would.
"""

from __future__ import annotations

import itertools
from typing import Any

from concordia.store.aio import AsyncStore, GroupWriter
from concordia.store.base import Store

DEFAULT_LANES = 2


class PostgresLoopStore:
    """``AsyncStoreLike`` over a :class:`~concordia.store.postgres.PostgresStore`."""

    def __init__(self, store: Store, *, lanes: int = DEFAULT_LANES, readers: int = 3) -> None:
        self.store = store
        # Each lane is an AsyncStore (a group writer, its settling); the first also reads.
        self.lanes = [AsyncStore(store, readers=readers if i == 0 else 1)
                      for i in range(max(lanes, 1))]
        self._turn = itertools.cycle(self.lanes)

    @property
    def writer(self) -> GroupWriter | None:
        """The first lane's writer (benchmarks and tests count its batches)."""
        return self.lanes[0].writer

    async def read(self, method: str, *args: Any) -> Any:
        return await self.lanes[0].read(method, *args)

    async def write(self, method: str, *args: Any) -> Any:
        return await next(self._turn).write(method, *args)

    def write_blocking(self, method: str, *args: Any) -> Any:
        return next(self._turn).write_blocking(method, *args)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()
