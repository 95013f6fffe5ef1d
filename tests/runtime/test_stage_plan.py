"""Unit tests of the pure planning of stages that use constructs
(``concordia.runtime.stage_plan``, reached through ``planner.plan``): each row is a journal
and a time, and the planner must return exactly one decision."""

from __future__ import annotations

from typing import Any

from concordia.definitions.models import ActionStep, CatchClause, Saga, SagaStep, Step
from concordia.machine.compile import CompiledSaga, Move, MoveKind, compile_saga
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.planner import plan
from concordia.status import CompStatus, RunStatus, StepStatus
from concordia.store.records import Attempted, ItemKey, ItemRecord, RunRecord, StepRecord

NOW = 1_000.0
S, C = StepStatus, CompStatus


def act(name: str, **extra: Any) -> ActionStep:
    return ActionStep(name=name, action=f"{name}.do", compensate=f"{name}.undo", **extra)


def compiled_of(*steps: Step) -> CompiledSaga:
    return compile_saga(Saga(name="plans", version=1, steps=steps))


def run_at(state: str, **extra: Any) -> RunRecord:
    return RunRecord(id="r", saga="plans", version=1, status=RunStatus.RUNNING, state=state,
                     input={}, correlation_id="c", causation_id=None, cause="r",
                     created_at=0.0, updated_at=0.0, **extra)


def decide(compiled: CompiledSaga, state: str, *records: Attempted,
           run: RunRecord | None = None) -> Decision:
    steps = {name: StepRecord(name) for name in compiled.steps}
    steps.update({r.name: r for r in records if isinstance(r, StepRecord)})
    items = {r.key: r for r in records if isinstance(r, ItemRecord)}
    return plan(compiled, run or run_at(state), steps, items, NOW)


def rec(name: str, status: StepStatus = S.PENDING, **extra: Any) -> Any:
    """A step's record, or an item's (named as runs show it: ``sync[1]``)."""
    item = _key(name)
    if item is not None:
        return ItemRecord(item[0], item[1], status, **extra)
    return StepRecord(name, status, **extra)


def _key(name: str) -> ItemKey | None:
    if not name.endswith("]"):
        return None
    step, _, index = name[:-1].partition("[")
    return step, int(index)


def D(kind: str, steps: tuple[str, ...] = (), event: str | None = None,
      **extra: Any) -> Decision:
    """A decision written as runs show it: item names (``sync[1]``) among ``steps``,
    a move or a settling's outcome as ``event``."""
    keys = [(n, _key(n)) for n in steps]
    names = tuple(n for n, k in keys if k is None)
    items = tuple(k for _, k in keys if k is not None)
    if kind == "move":
        assert event is not None
        stage = event.rpartition("_")[2]
        move = (Move(MoveKind(event.rpartition("_")[0]), int(stage)) if stage.isdigit()
                else Move(MoveKind(event)))
        return Decision(DecisionKind.MOVE, move=move)
    return Decision(DecisionKind(kind), steps=names, items=items,
                    failed=event == "failed", **extra)


def event(decision: Decision) -> str | None:
    """A move's event, or a settling's outcome (``succeeded``/``failed``)."""
    if decision.move is not None:
        return decision.move.event
    if decision.kind == DecisionKind.SETTLE:
        return "failed" if decision.failed else "succeeded"
    return None


FAN = compiled_of(act("prep"), act("sync", for_each="input.items", concurrency=2),
                  act("after"))
BEST = compiled_of(act("sync", for_each="input.items", mode="best_effort"))
COND = compiled_of(act("a"), ActionStep(name="b", action="b.do", compensate="b.undo",
                                        **{"if": "input.go"}))
CATCH = compiled_of(act("a", catch=(CatchClause(errors=("*",), goto="c"),)), act("b"),
                    act("c"))
CHILD = compiled_of(act("a"), SagaStep(name="kid", saga="other"))


def test_plain_stages_keep_the_plain_path_and_construct_stages_do_not() -> None:
    assert FAN.plain == (True, False, True)
    assert COND.plain == (True, False)
    assert (FAN.fan_outs, CHILD.children) == (frozenset({"sync"}), frozenset({"kid"}))
    assert FAN.plain_actions == frozenset({"prep", "after"})


def test_conditions_are_checked_then_the_step_starts() -> None:
    assert decide(COND, "run_1") == D("check", steps=("b",))
    assert decide(COND, "run_1", rec("b", S.READY)) == D("start", steps=("b",))
    assert event(decide(COND, "run_1", rec("b", S.SKIPPED))) == "done"


def test_a_fan_out_expands_then_starts_items_in_order_within_its_concurrency() -> None:
    assert decide(FAN, "run_1") == D("expand", steps=("sync",))
    sync = rec("sync", S.RUNNING, items=[10, 20, 30, 40])
    assert decide(FAN, "run_1", sync) == D("items", steps=("sync[0]", "sync[1]"))
    done = [rec(f"sync[{i}]", S.SUCCEEDED) for i in range(2)]
    assert decide(FAN, "run_1", sync, *done) == D("items",
                                                         steps=("sync[2]", "sync[3]"))
    # An item waiting on its retry holds its place; a due one starts again.
    waiting = rec("sync[0]", S.WAITING_RETRY, wake_at=NOW + 5)
    assert decide(FAN, "run_1", sync, waiting) == D("items", steps=("sync[1]",))
    both = [waiting, rec("sync[1]", S.WAITING_RETRY, wake_at=NOW + 3)]
    assert decide(FAN, "run_1", sync, *both) == D("wait", wake_at=NOW + 3)
    due = rec("sync[0]", S.WAITING_RETRY, wake_at=NOW - 1)
    assert decide(FAN, "run_1", sync, due) == D("items", steps=("sync[0]", "sync[1]"))
    # Interrupted by a crash (running, not finished): started again.
    crashed = rec("sync[0]", S.RUNNING, attempt=1)
    assert decide(FAN, "run_1", sync, crashed) == D("items", steps=("sync[0]", "sync[1]"))


def test_a_fan_out_settles_when_every_item_has_ended_or_one_failed() -> None:
    sync = rec("sync", S.RUNNING, items=[10, 20])
    ok = [rec(f"sync[{i}]", S.SUCCEEDED) for i in range(2)]
    assert decide(FAN, "run_1", sync, *ok) == D("settle", steps=("sync",),
                                                       event="succeeded")
    failed = rec("sync[1]", S.FAILED)
    assert decide(FAN, "run_1", sync, ok[0], failed) == D(
        "settle", steps=("sync", "sync[1]"), event="failed")
    assert event(decide(FAN, "run_1", rec("sync", S.RUNNING, items=[]))) == "succeeded"


def test_best_effort_undoes_a_failed_item_with_an_effect_on_its_own() -> None:
    sync = rec("sync", S.RUNNING, items=[1, 2, 3])
    broke = rec("sync[1]", S.FAILED, checkpoint={"half": 1})
    ok = [rec("sync[0]", S.SUCCEEDED), rec("sync[2]", S.SUCCEEDED)]
    assert decide(BEST, "run_0", sync, broke, *ok) == D("undo_item", steps=("sync[1]",))
    broke.comp_status = C.SUCCEEDED
    assert event(decide(BEST, "run_0", sync, broke, *ok)) == "succeeded"
    clean = rec("sync[1]", S.FAILED)  # nothing done: nothing to undo
    assert event(decide(BEST, "run_0", sync, clean, *ok)) == "succeeded"
    stuck = rec("sync[1]", S.FAILED, checkpoint={}, comp_status=C.FAILED)
    assert decide(BEST, "run_0", sync, stuck, *ok) == D(
        "settle", steps=("sync", "sync[1]"), event="failed")


def test_undoing_a_fan_out_takes_its_items_with_an_effect_last_first() -> None:
    sync = rec("sync", S.FAILED, items=[1, 2, 3, 4])
    items = [rec("sync[0]", S.SUCCEEDED), rec("sync[1]", S.SUCCEEDED, comp_status=C.SUCCEEDED),
             rec("sync[2]", S.FAILED, checkpoint={"at": 2}), rec("sync[3]", S.ABANDONED)]
    assert decide(FAN, "undo_1", sync, *items) == D("undo_item", steps=("sync[2]",))
    items[2].comp_status = C.SUCCEEDED
    assert decide(FAN, "undo_1", sync, *items) == D("undo_item", steps=("sync[0]",))
    items[0].comp_status = C.WAITING_RETRY
    items[0].wake_at = NOW + 7
    assert decide(FAN, "undo_1", sync, *items) == D("wait", wake_at=NOW + 7)
    items[0].comp_status = C.FAILED
    assert event(decide(FAN, "undo_1", sync, *items)) == "stuck"
    items[0].comp_status = C.SUCCEEDED
    assert event(decide(FAN, "undo_1", sync, *items)) == "undone"


def test_a_caught_step_is_journaled_then_the_run_jumps_to_its_goto() -> None:
    assert decide(CATCH, "run_0", rec("a", S.FAILED, caught=0)) == D("catch",
                                                                            steps=("a",))
    assert event(decide(CATCH, "run_0", rec("a", S.FAILED))) == "fail"
    assert event(decide(CATCH, "run_0", rec("a", S.CAUGHT, caught=0))) == "goto_2"


def test_a_child_saga_starts_waits_and_is_looked_at_when_woken() -> None:
    assert decide(CHILD, "run_1") == D("child", steps=("kid",))
    waiting = rec("kid", S.AWAITING, checkpoint={"run_id": "k"})
    assert decide(CHILD, "run_1", waiting) == D("wait", suspended=True)
    waiting.wake_at = NOW - 0.5  # its end woke the run
    assert decide(CHILD, "run_1", waiting) == D("child", steps=("kid",))


def test_undoing_a_child_asks_it_then_waits_for_it() -> None:
    done = rec("kid", S.SUCCEEDED, checkpoint={"run_id": "k"})
    assert decide(CHILD, "undo_1", done) == D("undo_child", steps=("kid",))
    done.comp_status = C.AWAITING
    assert decide(CHILD, "undo_1", done) == D("wait", suspended=True)
    done.wake_at = NOW
    assert decide(CHILD, "undo_1", done) == D("undo_child", steps=("kid",))
    never = rec("kid", S.ABANDONED)  # never created: nothing to undo
    assert event(decide(CHILD, "undo_1", never)) == "undone"


def test_a_cancellation_comes_first() -> None:
    run = run_at("run_1", cancel_reason="stop")
    assert event(decide(FAN, "run_1", rec("sync", S.RUNNING, items=[1]), run=run)) == "cancel"
