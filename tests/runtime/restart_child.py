"""A script that drives one run and is killed inside a step, then started again at once.

    python restart_child.py STORE DEFINITIONS SIDE_LOG ROLE

It builds an engine with the default lease TTL (30 s) the way a user's script does and
calls ``run_until_idle()``. ``ROLE`` is ``first`` (start run ``restart-1`` of the saga named
by ``$RESTART_SAGA``, then drive it), ``again`` (drive whatever is due) or ``holder``
(drive it, and hang in the step like ``first``, but stay alive: the process another one
must not enter). Each handler call appends a line (pid, step, item, attempt, idempotency
key) to SIDE_LOG before anything else; the handler named by ``$RESTART_HANG`` hangs on its
first attempt, after printing ``inside`` (the moment the parent kills it). At the end the
script prints ``done <status> <pending_elsewhere>``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tests.runtime.workers import SideLog

RUN_ID = "restart-1"
LINEAR = {"name": "linear", "version": 1, "steps": [
    {"name": name, "action": f"{name}.do", "compensate": f"{name}.undo"}
    for name in ("reserve", "charge", "ship")]}
FAN_OUT = {"name": "fanout", "version": 1, "steps": [
    {"name": "load", "action": "load.do", "compensate": "load.undo"},
    {"name": "sync", "action": "sync.do", "compensate": "sync.undo",
     "for_each": "results.load.adapters", "as": "adapter"},
    {"name": "ship", "action": "ship.do", "compensate": "ship.undo"}]}
HANG_SECONDS = 600.0


def registry_for(side: SideLog, hang: str) -> Any:
    from concordia.registry import Registry

    registry = Registry()

    def action(ctx: Any) -> Any:
        item = getattr(ctx, "index", None)
        side.write(pid=os.getpid(), step=ctx.step, item=item, attempt=ctx.attempt,
                   key=ctx.idempotency_key, phase="action")
        hangs = f"{ctx.step}:{item}" == hang or (item is None and ctx.step == hang)
        if hangs and os.environ.get("RESTART_ROLE") == "first":
            print("inside", flush=True)
            time.sleep(HANG_SECONDS)
        if ctx.step == "load":
            return {"adapters": ["a", "b", "c"]}
        return {"step": ctx.step, "item": item}

    def undo(ctx: Any) -> None:
        side.write(pid=os.getpid(), step=ctx.step, phase="compensation")

    for name in ("reserve", "charge", "ship", "load", "sync"):
        registry.add_action(f"{name}.do", action)
        registry.add_compensation(f"{name}.undo", undo)
    return registry


def main(argv: list[str]) -> int:
    store, definitions, side_path, role = argv
    os.environ["RESTART_ROLE"] = role
    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.runtime.engine import Engine

    registry = registry_for(SideLog(side_path), os.environ.get("RESTART_HANG", ""))
    with Engine(Catalog.load_strict([definitions]), registry, store,
                clock=SystemClock()) as engine:
        if role == "first":
            engine.start(os.environ["RESTART_SAGA"], {}, run_id=RUN_ID)
        passes = engine.run_until_idle()
        print(f"done {engine.get_run(RUN_ID).status} {passes.pending_elsewhere}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
