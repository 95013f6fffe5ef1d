"""A step the schema refuses is still checked as far as it is sound (its refused keys left
out), so fixing its schema errors reveals nothing ``validate`` had not already reported."""

from __future__ import annotations

from pathlib import Path

from concordia.definitions import Catalog
from tests.conftest import DEFINITIONS, POLICIES

# Step `pay` has a schema error (attempts), and besides it no compensation, an event the
# taxonomy lacks and a condition that does not compile. Step `ship` has an unknown key
# and a payload expression that reads an unknown step.
SAGA = """\
name: checkout
version: 1
steps:
  - name: pay
    action: billing.charge
    if: "input.total >"
    retry: {attempts: lots}
    emit:
      - event: shop.payment.taken
        payload: {}
  - name: ship
    action: courier.ship
    compensate: none
    reason: the last step
    colour: blue
    emit:
      - event: ml.run.completed
        payload:
          run_id: results.nowhere.id
"""

# The same tree with the schema errors fixed.
FIXED = SAGA.replace("    retry: {attempts: lots}\n", "").replace("    colour: blue\n", "")


def _codes(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "checkout.yaml"
    path.write_text(text)
    catalog = Catalog.load([str(path), DEFINITIONS, POLICIES])
    return sorted((p.code, p.pointer) for p in catalog.problems
                  if p.severity == "error" and p.file == str(path))


def test_schema_errors_and_the_tree_checks_come_together(tmp_path: Path) -> None:
    found = _codes(tmp_path, SAGA)
    schema = [("unknown-key", "/steps/1/colour"), ("wrong-type", "/steps/0/retry/attempts")]
    assert set(schema) <= set(found), found
    rest = [f for f in found if f not in schema]
    assert ("missing-compensation", "/steps/0") in rest
    assert ("unknown-event", "/steps/0/emit/0/event") in rest
    assert ("bad-expression", "/steps/0/if") in rest
    assert any(pointer == "/steps/1/emit/0/payload/run_id" for _, pointer in rest), rest
    # Fixing the schema errors reveals nothing that was not already reported.
    assert _codes(tmp_path, FIXED) == rest


def test_a_misspelt_key_is_not_also_missing(tmp_path: Path) -> None:
    found = _codes(tmp_path, "name: s\nversion: 1\nsteps:\n  - name: a\n    action: x.y\n"
                             "    compensation: x.undo\n")
    assert found == [("unknown-key", "/steps/0/compensation")]


def test_a_step_whose_name_the_schema_refuses_is_not_checked_further(tmp_path: Path) -> None:
    # (found by the fuzz test: a string name against the pattern spoiled the step's key)
    found = _codes(tmp_path, "name: s\nversion: 1\nsteps:\n  - name: Not An Identifier\n"
                             "    action: x.y\n")
    assert found == [("bad-name", "/steps/0/name")]
