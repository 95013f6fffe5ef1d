"""The worker process that ``test_crash_constructs`` kills with SIGKILL, again and again.

    python crash_constructs_child.py DB SIDE_LOG DEFINITIONS RUNS

Like ``crash_child.py``, for a saga that fans out and runs a child saga:

    parent:  prep -> fan (for_each over 4 items, 2 at a time) -> kid (child saga) -> final
    kid:     charge -> capture

Every handler call appends a JSON line to SIDE_LOG (one ``write`` and an ``fsync``) before
its side effect would happen and once it is done, so the parent test can compare what
really ran against the journal.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ITEMS = 4
PARENT, KID = "parent", "kid"


def definitions() -> list[dict[str, Any]]:
    retry = {"attempts": 3, "backoff": {"initial": "5ms", "factor": 2, "jitter": 0.5}}
    parent = {"name": PARENT, "version": 1, "steps": [
        {"name": "prep", "action": "prep.do", "compensate": "prep.undo", "retry": retry},
        {"name": "fan", "action": "item.do", "compensate": "item.undo", "retry": retry,
         "compensation_retry": retry, "for_each": "input.items", "concurrency": 2},
        {"name": "kid", "saga": KID, "input": {"run": "run.id", "plan": "input.plan"}},
        {"name": "final", "action": "final.do", "compensate": "final.undo", "retry": retry},
    ]}
    kid = {"name": KID, "version": 1, "steps": [
        {"name": "charge", "action": "charge.do", "compensate": "charge.undo", "retry": retry,
         "compensation_retry": retry},
        {"name": "capture", "action": "capture.do", "compensate": "capture.undo",
         "retry": retry},
    ]}
    return [parent, kid]


def run_id(i: int) -> str:
    return f"run-{i:04d}"


def plan_for(i: int) -> dict[str, Any]:
    """0: completes; 1: item (i // 4) % 4 fails for good (after a checkpoint when i % 8 ==
    5); 2: the final step fails (the completed child is reverted); 3: the child's capture
    fails (the child compensates itself, which fails the parent's step). Every other run
    has flaky first attempts."""
    kind = i % 4
    return {"kind": kind, "failing_item": (i // 4) % ITEMS if kind == 1 else -1,
            "checkpoint": i % 8 == 5, "flaky": i % 3 == 0}


def expected_status(plan: dict[str, Any]) -> str:
    return "completed" if plan["kind"] == 0 else "compensated"


class SideLog:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **entry: Any) -> None:
        os.write(self.fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
        os.fsync(self.fd)


def build_registry(side: SideLog) -> Any:
    from concordia.errors import PermanentError
    from concordia.registry import Registry

    registry = Registry()

    def base(ctx: Any, phase: str) -> dict[str, Any]:
        parent = ctx.input.get("run", ctx.run_id)
        return {"run": parent, "own": ctx.run_id, "step": ctx.step, "phase": phase,
                "index": getattr(ctx, "index", None), "key": ctx.idempotency_key,
                "attempt": ctx.attempt}

    def plan(ctx: Any) -> dict[str, Any]:
        data: dict[str, Any] = ctx.input["plan"]
        return data

    def action(ctx: Any) -> Any:
        entry = base(ctx, "action")
        side.write(event="call", **entry)
        p = plan(ctx)
        if p["flaky"] and ctx.attempt == 1:
            raise ConnectionError(f"{ctx.step} flaked")
        failing = ((ctx.step == "fan" and ctx.index == p["failing_item"])
                   or (ctx.step == "final" and p["kind"] == 2)
                   or (ctx.step == "capture" and p["kind"] == 3))
        if ctx.step == "fan" and (not failing or p["checkpoint"]):
            data = {"item": ctx.item, "run": ctx.run_id}
            ctx.checkpoint(data)
            side.write(event="checkpointed", data=data, **entry)
        if failing:
            raise PermanentError(f"{ctx.step} refused")
        result = {"step": ctx.step, "index": entry["index"], "key": ctx.idempotency_key}
        side.write(event="returned", result=result, **entry)
        return result

    def compensation(ctx: Any) -> None:
        entry = base(ctx, "compensation")
        side.write(event="call", result=ctx.result, completed=ctx.completed, **entry)
        side.write(event="compensated", **entry)

    for name in ("prep", "item", "final", "charge", "capture"):
        registry.add_action(f"{name}.do", action)
        registry.add_compensation(f"{name}.undo", compensation)
    return registry


def main(argv: list[str]) -> int:
    db, side_path, defs, runs = argv[0], argv[1], argv[2], int(argv[3])
    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.logging import configure_logging
    from concordia.runtime.engine import Engine

    configure_logging(json=True)
    side = SideLog(side_path)
    # A short lease: a killed worker's runs are carried on by the next one within 0.5 s.
    engine = Engine(Catalog.load_strict([defs]), build_registry(side), f"sqlite:///{db}",
                    clock=SystemClock(), lease_ttl=0.5)
    print("ready", flush=True)
    for i in range(runs):
        if engine.store.get_run(run_id(i)) is None:
            engine.start(PARENT, {"items": list(range(ITEMS)), "plan": plan_for(i)},
                         run_id=run_id(i))
        engine.run_until_idle()
    engine.drain(max_wait=5.0)
    engine.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
