"""The interpreter's pure core: given a run's journal, decide what happens next.

No I/O here: :func:`plan` reads a run, its step records and the compiled machine and
returns one :class:`Plan`; the driver in :mod:`concordia.runtime.engine` carries it out
and journals the outcome. Tests and every driver share this one decision procedure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from concordia.definitions.models import ActionStep
from concordia.machine.compile import COMPENSATION_FAILED, TERMINAL, CompiledSaga, parse_state
from concordia.store.records import RunRecord, StepRecord

PlanKind = Literal["start", "compensate", "move", "wait", "end"]


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    steps: tuple[str, ...] = ()
    event: str | None = None
    wake_at: float | None = None
    suspended: bool = False
    detail: dict[str, str] = field(default_factory=dict)


END = Plan("end")


def needs_compensation(compiled: CompiledSaga, rec: StepRecord) -> bool:
    """A step is undone when it has a compensation and may have changed the world."""
    step = compiled.saga.step(rec.name)
    return (isinstance(step, ActionStep) and step.compensate is not None
            and rec.has_effect and rec.comp_status != "succeeded")


def plan(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
         now: float) -> Plan:
    """The next thing to do for ``run``."""
    if run.state in TERMINAL or run.state == COMPENSATION_FAILED:
        return END
    kind, index = parse_state(run.state)
    if kind == "run":
        return _plan_forward(compiled, run, steps, index, now)
    return _plan_undo(compiled, run, steps, index, now)


def _plan_forward(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
                  index: int, now: float) -> Plan:
    if run.cancel_reason is not None:
        return Plan("move", event="cancel")
    ready: list[str] = []
    wakes: list[float] = []
    suspended = False
    failed = False
    done = True
    for name in compiled.stages[index]:
        rec = steps[name]
        if rec.status in ("succeeded", "skipped"):
            continue
        done = False
        if rec.status == "failed":
            failed = True
        elif rec.status in ("pending", "running"):
            ready.append(name)
        elif rec.status in ("waiting_retry", "awaiting"):
            if rec.wake_at is not None and rec.wake_at <= now:
                ready.append(name)
            else:
                suspended |= rec.status == "awaiting"
                if rec.wake_at is not None:
                    wakes.append(rec.wake_at)
    if failed:
        return Plan("move", event="fail")
    if done:
        return Plan("move", event="done")
    if ready:
        return Plan("start", steps=tuple(ready))
    return Plan("wait", wake_at=min(wakes) if wakes else None, suspended=suspended)


def _plan_undo(compiled: CompiledSaga, run: RunRecord, steps: dict[str, StepRecord],
               index: int, now: float) -> Plan:
    # Steps of one stage are independent of each other; undo them in reverse list order.
    for name in reversed(compiled.stages[index]):
        rec = steps[name]
        if not needs_compensation(compiled, rec):
            continue
        if rec.comp_status == "failed":
            return Plan("move", event="stuck")
        if rec.comp_status == "waiting_retry" and rec.wake_at is not None and rec.wake_at > now:
            return Plan("wait", wake_at=rec.wake_at)
        return Plan("compensate", steps=(name,))
    if index > 0:
        return Plan("move", event="undone")
    if run.cancel_reason is not None:
        return Plan("move", event="finish_cancelled")
    return Plan("move", event="finish_compensated" if run.compensated_any else "finish_failed")
