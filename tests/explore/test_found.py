"""What the explorer found in the engine itself, kept fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordia.testing import Faults, Harness
from tests.explore.conftest import plain_registry, tree

NONE_FAN = """\
name: none_fan
version: 1
input_schema:
  items: {{type: list, required: true}}
steps:
  - name: first
    action: x.first
    compensate: x.undo_first
  - name: notify
    action: x.notify
    compensate: none
    reason: a notice cannot be unsent
    for_each: input.items
    mode: {mode}
  - name: last
    action: x.last
    compensate: x.undo_last
"""


@pytest.mark.parametrize(("mode", "fail", "status"), [
    # A later step fails: the run undoes first, and has nothing to undo for the items.
    ("all", "last", "compensated"),
    # A best-effort item fails after its effect: nothing to undo for it, the run goes on.
    ("best_effort", "notify", "completed"),
])
def test_a_fan_out_that_says_compensate_none_is_never_undone(
        tmp_path: Path, mode: str, fail: str, status: str) -> None:
    # The planner asked to undo such items, and the engine failed on its own assertion
    # (the run halted with "engine error"): found by the explorer on random sagas.
    catalog = tree(tmp_path, {"none_fan": NONE_FAN.format(mode=mode)})
    faults = Faults().fail(fail, when="after", item=1 if fail == "notify" else None)
    harness = Harness(catalog, plain_registry(catalog), faults=faults)
    view = harness.run("none_fan", {"items": ["a", "b", "c"]})
    assert view.status == status
    assert "engine error" not in (view.error or "")
    assert "notify" not in harness.log.compensations()
