"""The worker process that ``test_crash_recovery`` kills with SIGKILL, again and again.

    python crash_child.py DB SIDE_LOG DEFINITIONS RUNS

It opens the SQLite store, prints ``ready``, then makes sure runs ``run-0000`` …
``run-<RUNS-1>`` exist (creating the missing ones) while driving every run that has work,
and finally drains the retry timers and prints ``done``. Started again after a kill, it
resumes whatever the previous process left unfinished.

Every handler call appends a JSON line (run, step, phase, idempotency key, attempt, ...) to
SIDE_LOG with one ``write`` and an ``fsync`` *before* its side effect would happen, and
another line once the effect is done, so the parent can compare what really ran against
the journal.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

STEPS = ("reserve", "hold", "notify", "charge", "ship")
# `notify` has nothing to undo (`compensate: none`); `hold` always checkpoints.
COMPENSATED = frozenset({"reserve", "hold", "charge", "ship"})
SAGA_NAME = "crashy"


def saga_document() -> dict[str, Any]:
    retry = {"attempts": 3, "backoff": {"initial": "5ms", "factor": 2, "jitter": 0.5}}
    steps: list[dict[str, Any]] = []
    for name in STEPS:
        step: dict[str, Any] = {"name": name, "action": f"{name}.do", "retry": retry}
        if name in COMPENSATED:
            step["compensate"] = f"{name}.undo"
            step["compensation_retry"] = retry
        else:
            step["compensate"] = "none"
            step["reason"] = "a notification cannot be taken back"
        steps.append(step)
    return {"name": SAGA_NAME, "version": 1, "steps": steps}


def run_id(i: int) -> str:
    return f"run-{i:04d}"


def plan_for(i: int) -> dict[str, Any]:
    """A mix of paths, decided by the run's number: success, failures at every step (with
    and without a checkpoint first), transient action failures, flaky compensations."""
    kind = i % 6
    fail_at = -1 if kind in (0, 3) else (i // 6) % len(STEPS)
    return {"fail_at": fail_at, "checkpoint": kind in (2, 5), "flaky": kind in (3, 4),
            "flaky_comp": kind in (4, 5)}


def expected_status(plan: dict[str, Any]) -> str:
    fail_at = plan["fail_at"]
    if fail_at < 0:
        return "completed"
    checkpointed = plan["checkpoint"] or STEPS[fail_at] == "hold"
    with_effect = list(STEPS[:fail_at]) + ([STEPS[fail_at]] if checkpointed else [])
    return "compensated" if COMPENSATED & set(with_effect) else "failed"


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

    def action(ctx: Any) -> Any:
        plan = ctx.input
        base = {"run": ctx.run_id, "step": ctx.step, "phase": "action",
                "key": ctx.idempotency_key, "attempt": ctx.attempt}
        side.write(event="call", **base)
        failing = STEPS.index(ctx.step) == plan["fail_at"]
        if ctx.step == "hold" or (failing and plan["checkpoint"]):
            data = {"partial": ctx.step, "run": ctx.run_id}
            ctx.checkpoint(data)
            side.write(event="checkpointed", data=data, **base)
        if plan["flaky"] and ctx.attempt == 1:
            raise ConnectionError(f"{ctx.step} flaked")
        if failing:
            raise PermanentError(f"{ctx.step} refused")
        result = {"step": ctx.step, "run": ctx.run_id, "key": ctx.idempotency_key}
        side.write(event="returned", result=result, **base)
        return result

    def compensation(ctx: Any) -> None:
        base = {"run": ctx.run_id, "step": ctx.step, "phase": "compensation",
                "key": ctx.idempotency_key, "attempt": ctx.attempt}
        side.write(event="call", result=ctx.result, completed=ctx.completed, **base)
        if ctx.input["flaky_comp"] and ctx.attempt == 1:
            raise ConnectionError(f"undo {ctx.step} flaked")
        side.write(event="compensated", **base)

    for name in STEPS:
        registry.add_action(f"{name}.do", action)
        if name in COMPENSATED:
            registry.add_compensation(f"{name}.undo", compensation)
    return registry


def main(argv: list[str]) -> int:
    db, side_path, definitions, runs = argv[0], argv[1], argv[2], int(argv[3])
    from concordia.clock import SystemClock
    from concordia.definitions.catalog import Catalog
    from concordia.logging import configure_logging
    from concordia.runtime.engine import Engine

    configure_logging(json=True)
    side = SideLog(side_path)
    # A short lease: a killed worker's runs are carried on by the next one within 0.5 s.
    engine = Engine(Catalog.load_strict([definitions]), build_registry(side),
                    f"sqlite:///{db}", clock=SystemClock(), lease_ttl=0.5)
    print("ready", flush=True)
    for i in range(runs):
        if engine.store.get_run(run_id(i)) is None:
            engine.start(SAGA_NAME, plan_for(i), run_id=run_id(i))
        engine.run_until_idle()
    engine.drain(max_wait=5.0)
    engine.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
