"""A sync handler abandoned by its timeout cannot checkpoint over a later attempt."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.invoke import StepAbandonedError

SAGA = """
name: slow
version: 1
steps:
  - name: work
    action: slow.work
    compensate: slow.undo
    timeout: 50ms
    retry: {attempts: 2, backoff: {initial: 1s}}
"""


def test_late_checkpoint_of_a_timed_out_attempt_is_refused(
        catalog_of: Callable[..., Catalog], engine_for: Callable[..., Engine]) -> None:
    release = threading.Event()
    late: list[BaseException] = []
    finished = threading.Event()

    def work(ctx: Any) -> dict[str, int]:
        if ctx.attempt == 1:
            release.wait(5)  # outlives its 50 ms timeout
            try:
                ctx.checkpoint({"from": "attempt 1"})
            except StepAbandonedError as exc:
                late.append(exc)
            finally:
                finished.set()
            return {"attempt": 1}
        return {"attempt": ctx.attempt}

    registry = Registry()
    registry.add_action("slow.work", work)
    registry.add_compensation("slow.undo", lambda ctx: None)
    engine = engine_for(catalog_of(SAGA), registry)
    run = engine.start("slow", {})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "waiting"
    assert view.step("work").error is not None
    assert "timeout" in view.step("work").error
    release.set()
    assert finished.wait(5)
    assert len(late) == 1
    assert engine.get_run(run.id).step("work").checkpoint is None
    engine.drain(max_wait=10)
    done = engine.get_run(run.id)
    assert done.status == "completed"
    assert done.step("work").result == {"attempt": 2}
