"""Validation of the language's constructs across files: child sagas calling each other,
their input mappings, jumps that do not go forward, unguarded reads of conditional
results, and a tree that uses every construct well (no problem at all)."""

from __future__ import annotations

from pathlib import Path

from concordia.definitions import Catalog
from concordia.definitions.models import ActionStep, CatchClause, SagaStep

GOOD = {
    "booking.yaml": """\
name: booking
version: 1
input_schema:
  trip_id: {type: string, required: true}
  legs: {type: list, required: true}
  vip: {type: boolean}
steps:
  - name: reserve_legs
    action: travel.reserve_leg
    compensate: travel.release_leg
    for_each: input.legs
    as: leg
    concurrency: 3
    mode: all
  - name: upgrade
    if: has(input.vip) && input.vip
    action: travel.upgrade
    compensate: travel.downgrade
  - name: pay
    saga: payment
    input:
      amount: size(results.reserve_legs) * 100
  - name: confirm
    action: travel.confirm
    compensate: none
    reason: a confirmation number is only read
    catch:
      - errors: [ConfirmationUnavailable, 503]
        goto: notify
        result:
          retry_later: "true"
          why: error.message
  - name: invoice
    action: travel.invoice
    compensate: travel.void
  - name: notify
    action: travel.notify
    compensate: none
    reason: a message cannot be unsent
""",
    "payment.yaml": """\
name: payment
version: 1
input_schema:
  amount: {type: integer, required: true}
steps:
  - name: charge
    action: pay.charge
    compensate: pay.refund
""",
}


def _tree(tmp_path: Path, files: dict[str, str]) -> Catalog:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return Catalog.load([str(tmp_path)])


def _problems(catalog: Catalog) -> list[tuple[str, str, int, str]]:
    return [(Path(p.file).name, p.code, p.line, p.message) for p in catalog.problems]


def test_a_tree_using_every_construct_has_no_problem(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, GOOD)
    assert _problems(catalog) == []
    saga = catalog.saga("booking")
    legs = saga.step("reserve_legs")
    assert isinstance(legs, ActionStep)
    assert (legs.for_each, legs.as_, legs.concurrency, legs.mode) == (
        "input.legs", "leg", 3, "all")
    assert saga.step("upgrade").if_ == "has(input.vip) && input.vip"
    pay = saga.step("pay")
    assert isinstance(pay, SagaStep)
    assert (pay.saga, pay.version, pay.compensable) == ("payment", None, True)
    confirm = saga.step("confirm")
    assert isinstance(confirm, ActionStep)
    assert confirm.catch == (CatchClause(errors=("ConfirmationUnavailable", 503), goto="notify",
                                         result={"retry_later": "true",
                                                 "why": "error.message"}),)


def test_sagas_calling_each_other_are_refused_at_each_call(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, {
        "a.yaml": "name: a\nversion: 1\nsteps:\n  - name: to_b\n    saga: b\n",
        "b.yaml": "name: b\nversion: 1\nsteps:\n  - name: to_c\n    saga: c\n",
        "c.yaml": "name: c\nversion: 1\nsteps:\n  - name: back_to_a\n    saga: a\n",
    })
    assert sorted(_problems(catalog)) == [
        ("a.yaml", "saga-recursion", 5, "saga 'a' calls itself: a -> b -> c -> a"),
        ("b.yaml", "saga-recursion", 5, "saga 'b' calls itself: b -> c -> a -> b"),
        ("c.yaml", "saga-recursion", 5, "saga 'c' calls itself: c -> a -> b -> c"),
    ]


def test_a_saga_called_twice_without_a_cycle_is_fine(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, {
        "a.yaml": "name: a\nversion: 1\nsteps:\n  - name: one\n    saga: leaf\n"
                  "  - name: two\n    saga: leaf\n",
        "leaf.yaml": "name: leaf\nversion: 1\nsteps:\n  - name: x\n    action: l.x\n"
                     "    compensate: l.undo\n",
    })
    assert _problems(catalog) == []


def test_child_input_mapping_must_fit_the_childs_input_schema(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["booking.yaml"] = files["booking.yaml"].replace(
        "      amount: size(results.reserve_legs) * 100",
        "      amout: size(results.reserve_legs) * 100")
    assert _problems(_tree(tmp_path, files)) == [
        ("booking.yaml", "missing-field", 21,
         "mapping for saga 'payment' misses required field 'amount'"),
        ("booking.yaml", "unknown-field", 22, "saga 'payment' has no field 'amout'"),
    ]


def test_a_child_saga_of_an_unknown_version_is_unknown(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["booking.yaml"] = files["booking.yaml"].replace("    saga: payment\n",
                                                          "    saga: payment\n    version: 2\n")
    assert _problems(_tree(tmp_path, files)) == [
        ("booking.yaml", "unknown-saga", 20, "unknown saga 'payment' version 2")]


def test_a_catch_goto_within_the_same_stage_is_no_jump_forward(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, {"s.yaml": """\
name: s
version: 1
steps:
  - name: a
    action: x.a
    compensate: x.undo_a
    catch:
      - errors: ["*"]
        goto: b
  - name: b
    action: x.b
    compensate: x.undo_b
    depends_on: []
"""})
    assert [(code, line) for _, code, line, _ in _problems(catalog)] == [
        ("goto-not-forward", 9)]


def test_reading_a_conditional_result_unguarded_is_a_warning(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, {"s.yaml": """\
name: s
version: 1
steps:
  - name: maybe
    if: input.go
    action: x.maybe
    compensate: x.undo
  - name: after
    if: results.maybe.ok
    action: x.after
    compensate: x.undo_after
  - name: guarded
    if: has(results.maybe) && results.maybe.ok
    action: x.guarded
    compensate: x.undo_guarded
"""})
    assert [(p.code, p.severity, p.line) for p in catalog.problems] == [
        ("unguarded-result", "warning", 9)]
    assert catalog.errors == []


def test_catch_result_reads_the_error_and_only_known_variables(tmp_path: Path) -> None:
    catalog = _tree(tmp_path, {"s.yaml": """\
name: s
version: 1
steps:
  - name: pay
    action: x.pay
    compensate: x.refund
    catch:
      - errors: [409]
        result:
          code: error.status
          seen: event.id
"""})
    assert [(code, line) for _, code, line, _ in _problems(catalog)] == [
        ("unknown-variable", 11)]
