"""An engine leaves nothing behind: after ``work(concurrency=N)`` and ``close()`` no thread
of its own is alive (writer, readers, lease keeper, handler pool), checkpoints go to its
own store again, and the store is closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from tests.runtime.sagas import action, saga

STORES = ["memory", "sqlite"]


def engine_threads(before: set[int]) -> list[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.ident not in before and t.is_alive())


def registry(calls: list[str]) -> Registry:
    reg = Registry()

    def step(ctx: Any) -> dict[str, Any]:
        ctx.checkpoint({"before": ctx.step})  # a write from the handler's thread
        calls.append(ctx.step)
        return {"done": ctx.step}

    for name in ("one", "two"):
        reg.add_action(f"{name}.do", step)
        reg.add_compensation(f"{name}.undo", lambda ctx: None)
    return reg


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("store", STORES)
def test_work_with_concurrency_leaves_no_thread_and_no_stale_writer(
        catalog_of: Callable[..., Catalog], tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"
    catalog = catalog_of(saga("pair", [action("one"), action("two")]))
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    calls: list[str] = []
    engine = Engine(catalog, registry(calls), url, lease_ttl=3.0)
    runs = [engine.start("pair", {}).id for _ in range(4)]
    stop = threading.Event()
    worker = threading.Thread(target=engine.work,
                              kwargs={"stop": stop, "concurrency": 4, "poll_interval": 0.02})
    worker.start()
    try:
        wait_for(lambda: all(engine.get_run(r).status == "completed" for r in runs))
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    # The async engine work() ran on is gone; what remains is the sync engine's own.
    left = engine_threads(before)
    assert not any(name.startswith(("concordia-writer", "concordia-read"))
                   for name in left), left
    # Checkpoints of this engine's own passes go to its store, not to a closed writer.
    run = engine.start("pair", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert view.step("one").checkpoint == {"before": "one"}
    engine.close()
    assert engine_threads(before) == []
    assert len(calls) == 10
