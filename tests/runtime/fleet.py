"""The saga, the plans and the handlers of ``test_multi_worker``'s ``concordia worker`` fleet.

The workers load this module with ``--handlers tests.runtime.fleet``. Every handler call
takes 0.1 s and appends two lines to the side log named by ``$FLEET_SIDE_LOG``: ``begin``
when it starts and ``end`` (with its start and end) when it is over, each with one
``os.write``. Timestamps are ``time.time()``, so the calls of different processes can be
put on one time line. ``charge`` is async (it runs on the worker's event loop); the
other handlers are sync (they run in the worker's handler pool).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from concordia.errors import PermanentError
from concordia.registry import Registry
from tests.runtime.workers import SideLog

SAGA_NAME = "trio"
STEPS = ("reserve", "charge", "ship")
CALL_SECONDS = 0.1
# Each run's plan is decided by its number: success, a failure for good at each step,
# and a transient failure that the step's retry policy absorbs.
PLANS = ("ok", "fail:reserve", "fail:charge", "fail:ship", "flaky:charge")


def saga_document() -> dict[str, Any]:
    retry = {"attempts": 2, "retryable": ["ConnectionError"],
             "backoff": {"initial": "50ms", "factor": 1, "jitter": 0}}
    return {"name": SAGA_NAME, "version": 1, "steps": [
        {"name": name, "action": f"{name}.do", "compensate": f"{name}.undo", "retry": retry}
        for name in STEPS]}


def run_id(i: int) -> str:
    return f"run-{i:04d}"


def plan_for(i: int) -> str:
    return PLANS[i % len(PLANS)]


def expected_status(plan: str) -> str:
    if plan in ("ok", "flaky:charge"):
        return "completed"
    return "failed" if plan == "fail:reserve" else "compensated"


def expected_compensations(plan: str) -> list[str]:
    """The steps undone, in order, for a run of ``plan``."""
    if not plan.startswith("fail:"):
        return []
    failed_at = STEPS.index(plan[5:])
    return list(reversed(STEPS[:failed_at]))


def result_of(run: str, step: str) -> dict[str, Any]:
    """What the action of ``step`` returns for ``run``."""
    return {"step": step, "run": run}


_side: SideLog | None = None


def _log(**entry: Any) -> None:
    global _side
    if _side is None:
        _side = SideLog(os.environ["FLEET_SIDE_LOG"])
    _side.write(pid=os.getpid(), **entry)


def _identity(ctx: Any, phase: str) -> dict[str, Any]:
    return {"run": ctx.run_id, "step": ctx.step, "phase": phase,
            "key": ctx.idempotency_key, "attempt": ctx.attempt}


def _outcome(ctx: Any) -> dict[str, Any]:
    plan = ctx.input["plan"]
    if plan == f"fail:{ctx.step}":
        raise PermanentError(f"{ctx.step} refused")
    if plan == f"flaky:{ctx.step}" and ctx.attempt == 1:
        raise ConnectionError(f"{ctx.step} flaked")
    return result_of(ctx.run_id, ctx.step)


def action(ctx: Any) -> dict[str, Any]:
    who = _identity(ctx, "action")
    start = time.time()
    _log(ev="begin", start=start, **who)
    time.sleep(CALL_SECONDS)
    try:
        return _outcome(ctx)
    finally:
        _log(ev="end", start=start, end=time.time(), **who)


async def async_action(ctx: Any) -> dict[str, Any]:
    who = _identity(ctx, "action")
    start = time.time()
    _log(ev="begin", start=start, **who)
    await asyncio.sleep(CALL_SECONDS)
    try:
        return _outcome(ctx)
    finally:
        _log(ev="end", start=start, end=time.time(), **who)


def compensation(ctx: Any) -> None:
    who = _identity(ctx, "compensation")
    start = time.time()
    _log(ev="begin", start=start, **who)
    time.sleep(CALL_SECONDS)
    _log(ev="end", start=start, end=time.time(), **who)


async def async_compensation(ctx: Any) -> None:
    who = _identity(ctx, "compensation")
    start = time.time()
    _log(ev="begin", start=start, **who)
    await asyncio.sleep(CALL_SECONDS)
    _log(ev="end", start=start, end=time.time(), **who)


registry = Registry()
for _name in STEPS:
    is_async = _name == "charge"
    registry.add_action(f"{_name}.do", async_action if is_async else action)
    registry.add_compensation(f"{_name}.undo",
                              async_compensation if is_async else compensation)
