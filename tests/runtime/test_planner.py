"""Unit tests of the pure planner (``concordia.runtime.planner``), decision by decision.

Each row is a journal (a run and its step records) and a time; the planner must return
exactly one :class:`Decision`. They prove every kind of decision: starting a step and
re-starting one a crash interrupted, due and not-due retries, awaits suspended with and
without a deadline, a finished stage (``done``), a failed step (``fail``), a requested
cancellation (``cancel``), the order of compensations within a stage and across stages,
a compensation waiting on its retry, one that failed for good (``stuck``), the three ways
of finishing the undo, and ended or halted runs (``end``), on sequential and parallel
stages. Also which steps need compensating and which retry policy applies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from concordia.definitions.models import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRY,
    ActionStep,
    AwaitStep,
    Backoff,
    Defaults,
    PolicyStep,
    RetryPolicy,
    Saga,
    Step,
)
from concordia.machine.compile import CompiledSaga, Move, MoveKind, compile_saga
from concordia.runtime.decision import DecisionKind
from concordia.runtime.planner import END, Decision, needs_compensation, plan, retry_policy
from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.records import RunRecord, StepRecord

NOW = 1_000.0
S, C, ST = StepStatus, CompStatus, RunStatus


def act(name: str, *, undo: bool = True, after: tuple[str, ...] | None = None,
        **extra: Any) -> ActionStep:
    return ActionStep(name=name, action=f"{name}.do", depends_on=after,
                      compensate=f"{name}.undo" if undo else None, compensate_none=not undo,
                      reason=None if undo else "nothing to undo", **extra)


def wait_for(name: str, *, timeout: float | None = None,
             after: tuple[str, ...] | None = None) -> AwaitStep:
    return AwaitStep(name=name, event="parcel.delivered", match="event.data.id == input.id",
                     timeout=timeout, depends_on=after)


def compiled_of(*steps: Step, **extra: Any) -> CompiledSaga:
    return compile_saga(Saga(name="order", version=1, steps=steps, **extra))


# Sequential: one step a stage. reserve -> charge (its own retry) -> notify (no undo)
# -> delivered (await) -> approve (policy).
SEQ = compiled_of(
    act("reserve"),
    act("charge", retry=RetryPolicy(attempts=5)),
    act("notify", undo=False),
    wait_for("delivered", timeout=3600),
    PolicyStep(name="approve", policy="refunds"),
)
# Parallel: stage 0 = (reserve), stage 1 = (charge, pack, label), stage 2 = (ship).
PAR = compiled_of(
    act("reserve"),
    act("charge", after=("reserve",)),
    act("pack", after=("reserve",)),
    wait_for("label", after=("reserve",)),
    act("ship", after=("charge", "pack", "label")),
)


def test_the_sagas_have_the_stages_the_tables_assume() -> None:
    assert SEQ.stages == (("reserve",), ("charge",), ("notify",), ("delivered",),
                          ("approve",))
    assert PAR.stages == (("reserve",), ("charge", "pack", "label"), ("ship",))


def journal(compiled: CompiledSaga, state: str, records: dict[str, dict[str, Any]], *,
            status: RunStatus = ST.RUNNING, cancel: str | None = None,
            compensated_any: bool = False) -> tuple[RunRecord, dict[str, StepRecord]]:
    """A run in ``state`` with every step pending except those ``records`` describes."""
    run = RunRecord(id="r1", saga="order", version=1, status=status, state=state, input={},
                    correlation_id="c1", causation_id=None, cause="r1", created_at=0.0,
                    updated_at=0.0, cancel_reason=cancel, compensated_any=compensated_any)
    steps = {name: StepRecord(name, **records.get(name, {})) for name in compiled.steps}
    return run, steps


DONE: dict[str, Any] = {"status": S.SUCCEEDED, "attempt": 1, "result": {"ok": 1}}
UNDONE: dict[str, Any] = {**DONE, "comp_status": C.SUCCEEDED, "comp_attempt": 1}


def start(*names: str) -> Decision:
    return Decision(DecisionKind.START, steps=names)


def compensate(name: str) -> Decision:
    return Decision(DecisionKind.COMPENSATE, steps=(name,))


def move(event: str) -> Decision:
    return Decision(DecisionKind.MOVE, move=Move(MoveKind(event)))


def wait(wake_at: float | None, *, suspended: bool = False) -> Decision:
    return Decision(DecisionKind.WAIT, wake_at=wake_at, suspended=suspended)


FORWARD = [
    # (why, saga, state, step records, run options, decision)
    ("a new run starts its first step", SEQ, "run_0", {}, {}, start("reserve")),
    ("the next stage starts its step", SEQ, "run_1", {"reserve": DONE}, {}, start("charge")),
    ("a step a crash interrupted (started, never ended) starts again", SEQ, "run_1",
     {"reserve": DONE, "charge": {"status": S.RUNNING, "attempt": 2}}, {}, start("charge")),
    ("a retry that is due starts", SEQ, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW}}, {},
     start("charge")),
    ("a retry that is not due waits for its timer", SEQ, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW + 30}}, {},
     wait(NOW + 30)),
    ("an await with a deadline is suspended until it", SEQ, "run_3",
     {"delivered": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW + 3600}}, {},
     wait(NOW + 3600, suspended=True)),
    ("an await without a deadline is suspended with no timer", SEQ, "run_3",
     {"delivered": {"status": S.AWAITING, "attempt": 1}}, {}, wait(None, suspended=True)),
    ("an await whose deadline passed starts (its timeout is handled)", SEQ, "run_3",
     {"delivered": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW - 1}}, {},
     start("delivered")),
    ("an await not yet started starts", SEQ, "run_3", {}, {}, start("delivered")),
    ("a policy step starts", SEQ, "run_4", {}, {}, start("approve")),
    ("a succeeded stage is done", SEQ, "run_0", {"reserve": DONE}, {}, move("done")),
    ("a skipped step settles its stage too", SEQ, "run_3",
     {"delivered": {"status": S.SKIPPED, "attempt": 1}}, {}, move("done")),
    ("the last stage done completes the run", SEQ, "run_4", {"approve": DONE}, {},
     move("done")),
    ("a failed step fails the stage", SEQ, "run_1",
     {"reserve": DONE, "charge": {"status": S.FAILED, "attempt": 5}}, {}, move("fail")),
    ("a requested cancellation wins over a ready step", SEQ, "run_1", {"reserve": DONE},
     {"cancel": "customer"}, move("cancel")),
    ("a cancellation wins over a waiting retry", SEQ, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW + 30}},
     {"cancel": "customer", "status": ST.WAITING}, move("cancel")),
    ("a cancellation wins over a suspended await", SEQ, "run_3",
     {"delivered": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW + 5}},
     {"cancel": "customer", "status": ST.SUSPENDED}, move("cancel")),
    ("a cancellation wins over a finished stage", SEQ, "run_0", {"reserve": DONE},
     {"cancel": "customer"}, move("cancel")),
    ("a cancellation wins over a failed step", SEQ, "run_0",
     {"reserve": {"status": S.FAILED, "attempt": 1}}, {"cancel": "customer"},
     move("cancel")),
    ("a waiting run whose timer is due starts", SEQ, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 3, "wake_at": NOW - 0.5}},
     {"status": ST.WAITING}, start("charge")),
    # parallel stages
    ("a parallel stage starts every step in list order", PAR, "run_1", {"reserve": DONE},
     {}, start("charge", "pack", "label")),
    ("only the unsettled steps of a stage start", PAR, "run_1",
     {"charge": DONE, "label": {"status": S.SKIPPED}}, {}, start("pack")),
    ("a due retry starts while a sibling stays suspended", PAR, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW},
      "pack": DONE, "label": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW + 60}},
     {}, start("charge")),
    ("a stage waits for its earliest timer, suspended if one awaits", PAR, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW + 90},
      "pack": DONE, "label": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW + 60}},
     {}, wait(NOW + 60, suspended=True)),
    ("a retry timer earlier than the await's deadline wakes it first", PAR, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW + 10},
      "pack": DONE, "label": {"status": S.AWAITING, "attempt": 1}},
     {}, wait(NOW + 10, suspended=True)),
    ("waiting on retries alone is not suspended", PAR, "run_1",
     {"charge": {"status": S.WAITING_RETRY, "attempt": 1, "wake_at": NOW + 20},
      "pack": {"status": S.WAITING_RETRY, "attempt": 2, "wake_at": NOW + 10},
      "label": DONE}, {}, wait(NOW + 10)),
    ("a failed sibling fails the stage though others are running", PAR, "run_1",
     {"charge": {"status": S.RUNNING, "attempt": 1}, "pack": {"status": S.FAILED},
      "label": {"status": S.AWAITING, "attempt": 1, "wake_at": NOW + 60}},
     {}, move("fail")),
    ("a parallel stage is done when every step is settled", PAR, "run_1",
     {"charge": DONE, "pack": DONE, "label": {"status": S.SKIPPED}}, {}, move("done")),
]


@pytest.mark.parametrize(("why", "compiled", "state", "records", "options", "expected"),
                         FORWARD, ids=[f[0] for f in FORWARD])
def test_forward_decisions(why: str, compiled: CompiledSaga, state: str,
                           records: dict[str, dict[str, Any]], options: dict[str, Any],
                           expected: Decision) -> None:
    run, steps = journal(compiled, state, records, **options)
    assert plan(compiled, run, steps, {}, NOW) == expected, why


UNDO = [
    # (why, saga, state, step records, run options, decision)
    ("the failed stage's step that checkpointed is undone", SEQ, "undo_1",
     {"reserve": DONE, "charge": {"status": S.FAILED, "checkpoint": {"hold": 1}}}, {},
     compensate("charge")),
    ("a failed step without a checkpoint changed nothing: the stage is undone", SEQ,
     "undo_1", {"reserve": DONE, "charge": {"status": S.FAILED}}, {}, move("undone")),
    ("an earlier stage's succeeded step is undone", SEQ, "undo_0", {"reserve": DONE}, {},
     compensate("reserve")),
    ("a compensation a crash interrupted runs again", SEQ, "undo_0",
     {"reserve": {**DONE, "comp_status": C.RUNNING, "comp_attempt": 1}}, {},
     compensate("reserve")),
    ("a compensation retry that is due runs", SEQ, "undo_0",
     {"reserve": {**DONE, "comp_status": C.WAITING_RETRY, "comp_attempt": 1,
                  "wake_at": NOW}}, {}, compensate("reserve")),
    ("a compensation retry that is not due waits for its timer", SEQ, "undo_0",
     {"reserve": {**DONE, "comp_status": C.WAITING_RETRY, "comp_attempt": 2,
                  "wake_at": NOW + 4}}, {}, wait(NOW + 4)),
    ("a compensation that failed for good halts the run", SEQ, "undo_0",
     {"reserve": {**DONE, "comp_status": C.FAILED, "comp_attempt": 5}}, {},
     move("stuck")),
    ("a step that says compensate: none is passed over", SEQ, "undo_2",
     {"reserve": DONE, "charge": DONE, "notify": DONE}, {}, move("undone")),
    ("an await is never compensated", SEQ, "undo_3",
     {"delivered": {"status": S.FAILED, "checkpoint": {"x": 1}}}, {}, move("undone")),
    ("a policy step is never compensated", SEQ, "undo_4",
     {"approve": {"status": S.FAILED, "result": {"decision": "reject"}}}, {},
     move("undone")),
    ("a step already compensated is not undone twice", SEQ, "undo_0", {"reserve": UNDONE},
     {"compensated_any": True}, move("finish_compensated")),
    ("nothing was undone: the run failed", SEQ, "undo_0",
     {"reserve": {"status": S.FAILED}}, {}, move("finish_failed")),
    ("something was undone: the run is compensated", SEQ, "undo_0", {"reserve": UNDONE},
     {"compensated_any": True}, move("finish_compensated")),
    ("a cancelled run finishes cancelled, whatever was undone", SEQ, "undo_0",
     {"reserve": UNDONE}, {"cancel": "customer", "compensated_any": True},
     move("finish_cancelled")),
    ("a cancelled run with nothing to undo finishes cancelled", SEQ, "undo_0", {},
     {"cancel": "customer"}, move("finish_cancelled")),
    ("a stage still undoing waits before finishing cancelled", SEQ, "undo_0",
     {"reserve": {**DONE, "comp_status": C.WAITING_RETRY, "wake_at": NOW + 1}},
     {"cancel": "customer"}, wait(NOW + 1)),
    # parallel stages: reverse list order within the stage
    ("the last step of a parallel stage is undone first", PAR, "undo_1",
     {"charge": DONE, "pack": DONE, "label": DONE}, {}, compensate("pack")),
    ("then the one before it", PAR, "undo_1",
     {"charge": DONE, "pack": UNDONE, "label": DONE}, {}, compensate("charge")),
    ("an abandoned sibling that checkpointed is undone too", PAR, "undo_1",
     {"charge": {"status": S.ABANDONED, "checkpoint": {"hold": 2}}, "pack": DONE,
      "label": {"status": S.FAILED}}, {}, compensate("pack")),
    ("a sibling waiting on its compensation retry holds the stage", PAR, "undo_1",
     {"charge": DONE, "pack": {**DONE, "comp_status": C.WAITING_RETRY, "wake_at": NOW + 7}},
     {}, wait(NOW + 7)),
    ("a sibling whose compensation failed halts the run before the others", PAR, "undo_1",
     {"charge": DONE, "pack": {**DONE, "comp_status": C.FAILED}}, {}, move("stuck")),
    ("an undone parallel stage moves to the stage before", PAR, "undo_1",
     {"charge": UNDONE, "pack": UNDONE, "label": DONE}, {"compensated_any": True},
     move("undone")),
]


@pytest.mark.parametrize(("why", "compiled", "state", "records", "options", "expected"),
                         UNDO, ids=[u[0] for u in UNDO])
def test_undo_decisions(why: str, compiled: CompiledSaga, state: str,
                        records: dict[str, dict[str, Any]], options: dict[str, Any],
                        expected: Decision) -> None:
    run, steps = journal(compiled, state, records, **options)
    assert plan(compiled, run, steps, {}, NOW) == expected, why


ENDS = [
    # (why, state, status)
    ("completed", "completed", ST.COMPLETED),
    ("compensated", "compensated", ST.COMPENSATED),
    ("failed", "failed", ST.FAILED),
    ("cancelled", "cancelled", ST.CANCELLED),
    ("halted: a compensation failed", "compensation_failed", ST.COMPENSATION_FAILED),
    ("halted: stuck mid-saga", "run_1", ST.STUCK),
    ("halted: stuck mid-undo", "undo_0", ST.STUCK),
    ("an end state, whatever the status says", "completed", ST.RUNNING),
]


@pytest.mark.parametrize(("why", "state", "status"), ENDS, ids=[e[0] for e in ENDS])
def test_ended_and_halted_runs_end(why: str, state: str, status: RunStatus) -> None:
    # Records that would otherwise ask for work: the run's status and state decide alone.
    run, steps = journal(SEQ, state, {"charge": {"status": S.PENDING},
                                      "reserve": {**DONE, "comp_status": C.RUNNING}},
                         status=status, cancel="late")
    assert plan(SEQ, run, steps, {}, NOW) == END, why
    assert Decision(DecisionKind.END) == END


def walk_undo(compiled: CompiledSaga, state: str, records: dict[str, dict[str, Any]],
              **options: Any) -> tuple[list[str], str]:
    """Play the planner's undo decisions out, every compensation succeeding at once;
    return the compensations in the order asked for and the end state."""
    run, steps = journal(compiled, state, records, **options)
    order: list[str] = []
    for _ in range(50):  # bounded: a planner that loops fails the test, never hangs it
        decision = plan(compiled, run, steps, {}, NOW)
        if decision.kind == "compensate":
            name = decision.steps[0]
            order.append(name)
            steps[name] = replace(steps[name], comp_status=C.SUCCEEDED)
            run.compensated_any = True
        elif decision.kind == "move":
            assert decision.move is not None
            run.state = compiled.move(run.state, decision.move)
            if run.state not in compiled.where:
                return order, run.state
        else:
            raise AssertionError(f"unexpected {decision} in {run.state}")
    raise AssertionError("the undo did not finish")


def test_undo_runs_in_reverse_across_sequential_stages() -> None:
    order, end = walk_undo(SEQ, "undo_3", {
        "reserve": DONE, "charge": DONE, "notify": DONE,
        "delivered": {"status": S.FAILED, "attempt": 1}})
    assert order == ["charge", "reserve"]  # notify: compensate none; the await: nothing
    assert end == "compensated"


def test_undo_runs_in_reverse_across_parallel_stages() -> None:
    order, end = walk_undo(PAR, "undo_2", {
        "reserve": DONE, "charge": DONE, "pack": {"status": S.SUCCEEDED},
        "label": DONE, "ship": {"status": S.FAILED, "checkpoint": {"parcel": 1}}})
    assert order == ["ship", "pack", "charge", "reserve"]
    assert end == "compensated"


def test_undo_of_a_cancelled_run_ends_cancelled() -> None:
    order, end = walk_undo(PAR, "undo_1", {
        "reserve": DONE, "charge": DONE, "pack": {"status": S.ABANDONED},
        "label": {"status": S.ABANDONED}}, cancel="customer")
    assert order == ["charge", "reserve"]
    assert end == "cancelled"


def test_a_failure_with_nothing_to_undo_ends_failed() -> None:
    order, end = walk_undo(PAR, "undo_0", {"reserve": {"status": S.FAILED}})
    assert order == []
    assert end == "failed"


def test_the_planner_does_not_change_the_journal() -> None:
    run, steps = journal(PAR, "undo_1", {"charge": DONE, "pack": DONE})
    before = (replace(run), {n: replace(r) for n, r in steps.items()})
    plan(PAR, run, steps, {}, NOW)
    assert (run, steps) == before


NEEDS = [
    # (why, step, record, expected)
    ("succeeded with a compensation", "reserve", DONE, True),
    ("failed after a checkpoint", "reserve", {"status": S.FAILED, "checkpoint": {}}, True),
    ("abandoned after a checkpoint", "reserve",
     {"status": S.ABANDONED, "checkpoint": {"x": 1}}, True),
    ("compensation under way", "reserve", {**DONE, "comp_status": C.RUNNING}, True),
    ("compensation waiting to retry", "reserve", {**DONE, "comp_status": C.WAITING_RETRY},
     True),
    ("compensation failed (still to undo)", "reserve", {**DONE, "comp_status": C.FAILED},
     True),
    ("already compensated", "reserve", UNDONE, False),
    ("never ran", "reserve", {}, False),
    ("failed before any checkpoint", "reserve", {"status": S.FAILED}, False),
    ("running, no checkpoint", "reserve", {"status": S.RUNNING}, False),
    ("compensate: none", "notify", DONE, False),
    ("an await", "delivered", DONE, False),
    ("a policy", "approve", DONE, False),
]


@pytest.mark.parametrize(("why", "name", "record", "expected"), NEEDS,
                         ids=[n[0] for n in NEEDS])
def test_needs_compensation(why: str, name: str, record: dict[str, Any],
                            expected: bool) -> None:
    assert needs_compensation(SEQ, StepRecord(name, **record)) is expected, why


OWN = RetryPolicy(attempts=7)
SAGA_WIDE = RetryPolicy(attempts=4, backoff=Backoff(initial=2.0))
OWN_COMP = RetryPolicy(attempts=9)
SAGA_COMP = RetryPolicy(attempts=6)


@pytest.mark.parametrize(("why", "step", "defaults", "compensation", "expected"), [
    ("the step's own policy", act("a", retry=OWN), Defaults(retry=SAGA_WIDE), False, OWN),
    ("else the saga's default", act("a"), Defaults(retry=SAGA_WIDE), False, SAGA_WIDE),
    ("else the engine's default", act("a"), Defaults(), False, DEFAULT_RETRY),
    ("a compensation's own policy", act("a", compensation_retry=OWN_COMP),
     Defaults(compensation_retry=SAGA_COMP), True, OWN_COMP),
    ("else the saga's compensation default", act("a", retry=OWN),
     Defaults(retry=SAGA_WIDE, compensation_retry=SAGA_COMP), True, SAGA_COMP),
    ("else the engine's compensation default", act("a", retry=OWN), Defaults(), True,
     DEFAULT_COMPENSATION_RETRY),
    ("an await is decided once", wait_for("w"), Defaults(retry=SAGA_WIDE), False,
     RetryPolicy(attempts=1)),
    ("a policy check is decided once", PolicyStep(name="p", policy="x"),
     Defaults(retry=SAGA_WIDE), False, RetryPolicy(attempts=1)),
])
def test_retry_policy(why: str, step: Step, defaults: Defaults, compensation: bool,
                      expected: RetryPolicy) -> None:
    saga = Saga(name="s", version=1, steps=(step,), defaults=defaults)
    assert retry_policy(saga, step, compensation=compensation) == expected, why
