"""A store for an event loop: its I/O off the loop, and the writes of many runs grouped.

:class:`AsyncStore` wraps any :class:`~concordia.store.base.Store`. A store that does no
I/O (the in-memory one) is called inline. Otherwise reads run on a small thread pool, and
writes go to :class:`GroupWriter`: one thread that takes every write waiting, applies
them in one transaction (each in a savepoint of its own, so one refused write does not
undo the others) and one ``fsync``, and only then releases each writer with its own
outcome. The guarantees stay those of a single write: a caller resumes only once its
write is durable; what the batch shares is the cost of making it so.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from concordia.store.base import Batching, Store, Write
from concordia.store.changes import Commit

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], None]


class GroupWriter:
    """One writer thread that commits the pending writes of many callers together."""

    def __init__(self, store: Store, max_batch: int = 128) -> None:
        self.store = store
        self.max_batch = max_batch
        self.batches = 0  # transactions committed (for benchmarks and tests)
        self.writes = 0
        # Each write, the commit it writes (if that is all it does: see _grouped), and
        # whom to tell once it is durable.
        self._queue: list[tuple[Write, Commit | None, Done]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="concordia-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Write, commit: Commit | None, done: Done) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the store's writer is closed")
            self._queue.append((fn, commit, done))
            self._cv.notify()

    def write_blocking(self, fn: Write, commit: Commit | None = None) -> Any:
        """Submit ``fn`` and wait in this thread until it is durable (or refused)."""
        finished = threading.Event()
        box: list[Any] = []

        def done(value: Any, error: BaseException | None) -> None:
            box.extend((value, error))
            finished.set()

        self.submit(fn, commit, done)
        finished.wait()
        value, error = box
        if error is not None:
            raise error
        return value

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            outcomes = self._write(batch)
            self.batches += 1
            self.writes += len(batch)
            for (_, _, done), (value, error) in zip(batch, outcomes, strict=True):
                done(value, error)

    def _write(self, batch: list[tuple[Write, Commit | None, Done]]
               ) -> list[tuple[Any, BaseException | None]]:
        store = self.store
        if not isinstance(store, Batching):  # one at a time (in memory: nothing to share)
            out: list[tuple[Any, BaseException | None]] = []
            for fn, _, _ in batch:
                try:
                    out.append((fn(store), None))
                except Exception as exc:
                    out.append((None, exc))
            return out
        grouped, sizes = _grouped(batch)
        return _spread(store.write_batch(grouped), sizes)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()


class AsyncStore:
    """A store's reads and writes as coroutines (see the module docstring)."""

    def __init__(self, store: Store, *, readers: int = 2) -> None:
        self.store = store
        self.inline = not store.does_io
        self._readers: ThreadPoolExecutor | None = None
        self.writer: GroupWriter | None = None
        # Writes made durable and not yet reported to their waiters: the writer thread
        # wakes the loop once for all of them, not once per write.
        self._settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._settling = threading.Lock()
        if not self.inline:
            self._readers = ThreadPoolExecutor(readers, thread_name_prefix="concordia-read")
            self.writer = GroupWriter(store)

    async def read(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)``, a read, off the loop."""
        if self._readers is None:
            return fn(self.store)
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, self.store)

    async def write(self, fn: Callable[[Store], T], commit: Commit | None = None) -> T:
        """``fn(store)`` as one write of a group commit, resolved once it is durable
        (``commit``: the plain commit it writes, which may share a statement)."""
        if self.writer is None:
            return fn(self.store)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(value: Any, error: BaseException | None) -> None:
            with self._settling:
                wake = not self._settled
                self._settled.append((future, value, error))
            if wake:
                loop.call_soon_threadsafe(self._settle_all)

        self.writer.submit(fn, commit, done)
        value: T = await future
        return value

    def _settle_all(self) -> None:
        with self._settling:
            settled, self._settled = self._settled, []
        for future, value, error in settled:
            _settle(future, value, error)

    def write_blocking(self, fn: Callable[[Store], T]) -> T:
        """A write from a thread (a sync handler's checkpoint): waits until durable."""
        if self.writer is None:
            return fn(self.store)
        value: T = self.writer.write_blocking(fn)
        return value

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._readers is not None:
            self._readers.shutdown(wait=True)


def _grouped(batch: list[tuple[Write, Commit | None, Done]]) -> tuple[list[Write], list[int]]:
    """The batch's writes, each run of consecutive plain commits (a step's, with no events
    or awaits) made one write (the store writes several at once); and how many of the
    batch's writes each one stands for."""
    grouped: list[Write] = []
    sizes: list[int] = []
    group: list[tuple[Write, Commit]] = []  # consecutive plain commits

    def close_group() -> None:
        if len(group) == 1:
            grouped.append(group[0][0])
            sizes.append(1)
        elif group:
            grouped.append(_CommitGroup([c for _, c in group]))
            sizes.append(len(group))
        group.clear()

    for fn, commit, _ in batch:
        if commit is not None and commit.plain:
            group.append((fn, commit))
            continue
        close_group()
        grouped.append(fn)
        sizes.append(1)
    close_group()
    return grouped, sizes


class _CommitGroup:
    """Consecutive runs' commits written together; its result is one outcome each."""

    def __init__(self, commits: list[Commit]) -> None:
        self.commits = commits

    def __call__(self, store: Store) -> list[BaseException | None]:
        assert isinstance(store, Batching)
        many: list[BaseException | None] = list(store.commit_many(self.commits))
        return many


def _spread(outcomes: list[tuple[Any, BaseException | None]], sizes: list[int]
            ) -> list[tuple[Any, BaseException | None]]:
    """One outcome per write again: a group's list of per-commit refusals spread out (or
    its one failure given to each of its commits)."""
    spread: list[tuple[Any, BaseException | None]] = []
    for (value, error), size in zip(outcomes, sizes, strict=True):
        if size == 1:
            spread.append((value, error))
        elif error is not None:
            spread.extend([(None, error)] * size)
        else:
            spread.extend((None, refused) for refused in value)
    return spread


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
