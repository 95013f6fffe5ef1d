"""The oracle and the bounds, table by table: the options of each kind of point, how the
budget filters them, the order of the depth-first search, and how many paths a saga has
within the bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordia.definitions.models import ActionStep, CatchClause, RetryPolicy, Saga
from concordia.explore import Bounds, Workbench
from concordia.explore.failures import (
    UNNAMED,
    action_options,
    compensation_options,
    error_kinds,
)
from concordia.explore.model import Act, Option, Point, PointKind
from concordia.explore.oracle import Oracle, PathMerged, Script, next_prefix
from tests.explore.conftest import tree

# -- the depth-first order ---------------------------------------------------------------------


@pytest.mark.parametrize(("trace", "expected"), [
    ([], None),
    ([(0, 1)], None),
    ([(0, 2)], [1]),
    ([(1, 2)], None),
    ([(0, 3), (0, 2)], [0, 1]),
    ([(0, 3), (1, 2)], [1]),
    ([(2, 3), (1, 2)], None),
    ([(0, 2), (0, 1), (0, 1)], [1]),
])
def test_next_prefix_backtracks_to_the_deepest_point_with_options_left(
        trace: list[tuple[int, int]], expected: list[int] | None) -> None:
    assert next_prefix(trace) == expected


HAPPY = Option(Act.OK, "succeeds")
FAULT_A = Option(Act.FAIL, "fails a", fault=True)
FAULT_B = Option(Act.FAIL, "fails b", fault=True)
POINT = Point(PointKind.ACTION, "s", "s#1")


@pytest.mark.parametrize(("budget", "prefix", "picked", "counted"), [
    (0, [], "succeeds", None),  # one fitting option: no branching point
    (1, [], "succeeds", (0, 3)),
    (1, [1], "fails a", (1, 3)),
    (1, [2], "fails b", (2, 3)),
    (2, [2], "fails b", (2, 3)),
])
def test_the_oracle_follows_its_prefix_among_the_options_the_budget_allows(
        budget: int, prefix: list[int], picked: str, counted: tuple[int, int] | None) -> None:
    oracle = Oracle(prefix, budget)
    assert oracle.choose(POINT, [HAPPY, FAULT_A, FAULT_B]).label == picked
    assert oracle.trace == ([] if counted is None else [counted])
    assert oracle.used == (picked != "succeeds")


def test_a_spent_budget_leaves_only_the_happy_option() -> None:
    oracle = Oracle([1], 1)
    assert oracle.choose(POINT, [HAPPY, FAULT_A]).label == "fails a"
    assert oracle.choose(Point(PointKind.ACTION, "t", "t#1"), [HAPPY, FAULT_A]) == HAPPY
    assert len(oracle.trace) == 1


def test_a_state_met_before_past_the_prefix_merges_the_path() -> None:
    oracle = Oracle([], 1, seen=lambda point: 7)
    with pytest.raises(PathMerged) as stop:
        oracle.choose(POINT, [HAPPY, FAULT_A])
    assert stop.value.into == 7
    # Within the prefix, the state is the path's own: never merged.
    assert Oracle([0], 1, seen=lambda point: 7).choose(POINT, [HAPPY, FAULT_A]) == HAPPY


def test_a_script_names_points_by_kind_key_and_occurrence() -> None:
    script = Script({(PointKind.ACTION, "s#1", 1): "fails a"})
    assert script.choose(POINT, [HAPPY, FAULT_A]) == HAPPY  # first time s#1 is met
    assert script.choose(POINT, [HAPPY, FAULT_A]) == FAULT_A  # second (a crash repeats it)
    assert not script.missed


# -- the options of each point -----------------------------------------------------------------


def _saga(step: ActionStep, retry: RetryPolicy | None = None) -> Saga:
    return Saga(name="s", version=1, steps=(step,),
                defaults={"retry": retry} if retry else {})  # type: ignore[arg-type]


def _action(**fields: object) -> ActionStep:
    return ActionStep(name="a", action="x.a", compensate="x.undo", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("retry", "catch", "kinds"), [
    # No retry and no catch: every error behaves alike, plus the one none names.
    (None, (), [(UNNAMED, False)]),
    (RetryPolicy(attempts=3, retryable=("TimeoutError",)), (),
     [("TimeoutError", True), (UNNAMED, False)]),
    # Names retried alike collapse into one behaviour.
    (RetryPolicy(attempts=3, retryable=("TimeoutError", "ConnectionError")), (),
     [("TimeoutError", True), (UNNAMED, False)]),
    # RetryableError is always retried, PermanentError never: the engine's rules.
    (RetryPolicy(attempts=3, retryable=("*",), non_retryable=("ValueError",)), (),
     [("ValueError", False), (UNNAMED, True)]),
    (None, (CatchClause(errors=("SoldOut",)),), [("SoldOut", False), (UNNAMED, False)]),
    (None, (CatchClause(errors=(409,)), CatchClause(errors=("*",))),
     [("409", False), (UNNAMED, False)]),
    (RetryPolicy(attempts=2, retryable=("RetryableError",)),
     (CatchClause(errors=("PermanentError",)),),
     [("PermanentError", False), ("RetryableError", True), (UNNAMED, False)]),
])
def test_error_kinds_are_the_behaviours_the_definition_tells_apart(
        retry: RetryPolicy | None, catch: tuple[CatchClause, ...],
        kinds: list[tuple[str, bool]]) -> None:
    step = _action(catch=catch)
    found = error_kinds(_saga(step, retry), step)
    assert [(k.name, k.retryable) for k in found] == kinds


@pytest.mark.parametrize(("attempts", "attempt", "retryable", "labels"), [
    (1, 1, False, 5),  # ok, before, after, crash, cancel
    (3, 1, True, 7),  # before/after x once/every attempt left
    (3, 3, True, 5),  # the last attempt: a failure is for good
    (3, 1, False, 5),
])
def test_action_options(attempts: int, attempt: int, retryable: bool, labels: int) -> None:
    policy = RetryPolicy(attempts=attempts, retryable=("*",) if retryable else ("X",))
    step = _action(retry=policy)
    kinds = [k for k in error_kinds(_saga(step), step) if k.retryable == retryable][:1]
    options = action_options(kinds, policy, attempt, crash=True, cancel=True)
    assert len(options) == labels
    assert options[0] == Option(Act.OK, "succeeds")
    assert all(o.fault for o in options[1:])
    if attempt == attempts or not retryable:
        assert all(o.sticky for o in options if o.act == Act.FAIL)


@pytest.mark.parametrize(("attempts", "attempt", "acts"), [
    (5, 1, ["ok", "retried", "every"]),
    (5, 5, ["ok", "every"]),
    (1, 1, ["ok", "every"]),
])
def test_compensation_options(attempts: int, attempt: int, acts: list[str]) -> None:
    options = compensation_options(RetryPolicy(attempts=attempts), attempt)
    got = ["ok" if o.act == Act.OK else "every" if o.sticky else "retried" for o in options]
    assert got == acts


# -- the bounds --------------------------------------------------------------------------------

LINEAR = """\
name: linear
version: 1
steps:
  - name: a
    action: x.a
    compensate: x.undo_a
  - name: b
    action: x.b
    compensate: x.undo_b
"""

FAN = """\
name: fan
version: 1
input_schema:
  items: {type: list, required: true}
steps:
  - name: a
    action: x.a
    compensate: x.undo_a
    for_each: input.items
"""


RETRIED = """\
name: retried
version: 1
steps:
  - name: a
    action: x.a
    compensate: x.undo_a
    retry: {attempts: 2}
  - name: b
    action: x.b
    compensate: x.undo_b
"""


@pytest.mark.parametrize(("saga", "faults", "items", "paths"), [
    # faults 0: the happy path only.
    ("linear", 0, 3, 1),
    # faults 1: each step's 4 faults (before or after its effect, the worker dies, a
    # cancel comes) and the happy path; a compensation can fail only with a second.
    ("linear", 1, 3, 9),
    # faults 2: besides, each second fault after a first (the compensations' included).
    ("linear", 2, 3, 27),
    # A list of 3, 1 or 0 items; each item's 4 faults.
    ("fan", 0, 3, 3),
    ("fan", 1, 3, 1 + 3 * 4 + 1 + 4 + 1),
    ("fan", 1, 1, 1 + 4 + 1),
    # a retried once: before or after its effect, then retried or on every attempt.
    ("retried", 1, 3, 1 + 4 + (4 + 2)),
])
def test_paths_within_the_bounds(tmp_path: Path, saga: str, faults: int, items: int,
                                 paths: int) -> None:
    catalog = tree(tmp_path, {"linear": LINEAR, "fan": FAN, "retried": RETRIED})
    ex = Workbench(catalog).explorer(catalog.saga(saga), Bounds(faults=faults, items=items))
    found = ex.explore()
    assert len(found.paths) == paths
    assert all(len(p.faults) <= faults for p in found.paths)
    assert len({tuple(c.describe() for c in p.choices) for p in found.paths}) == paths


def test_a_state_met_twice_is_explored_once(tmp_path: Path) -> None:
    # Failing before or after its effect, then retried, a leaves the same state: the
    # effect landed (once: same idempotency key), a succeeded at attempt 2.
    # With a fault left to spend at b, the second is merged into the first there.
    catalog = tree(tmp_path, {"retried": RETRIED})
    found = Workbench(catalog).explorer(catalog.saga("retried"), Bounds(faults=2)).explore()
    merged = [p for p in found.paths if p.merged_into is not None]
    assert [p.faults[0].option.label for p in merged] == [
        "fails after its effect (UnexpectedError), then is retried"]
    for path in merged:
        base = found.paths[path.merged_into - 1]  # type: ignore[operator]
        assert base.merged_into is None
        assert base.number < path.number
    assert found.states < sum(p.states for p in found.paths)
