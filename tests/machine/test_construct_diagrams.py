"""Diagram snapshots of a saga that uses every construct: a fan-out, a condition, a child
saga with a catch entry that jumps ahead, and an action's catch entry that continues.

The author's view (Mermaid and DOT) and the engine's state machine (Mermaid) are
compared with the files in ``snapshots/``. After a deliberate change to a diagram,
rewrite them with ``CONCORDIA_UPDATE_SNAPSHOTS=1 pytest tests/machine`` and review the
difference.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from concordia.definitions.documents import parse_bytes
from concordia.definitions.models import Saga
from concordia.machine import compile_saga, to_mermaid
from concordia.machine.flow import build_flow
from concordia.machine.flow_render import flow_dot, flow_mermaid, flow_svg

SNAPSHOTS = Path(__file__).parent / "snapshots"
SOURCE = SNAPSHOTS / "constructs.yaml"


def _saga() -> Saga:
    parsed = parse_bytes(SOURCE.read_bytes(), str(SOURCE))
    assert parsed.problems == []
    [saga] = parsed.sagas
    return saga


def _rendered() -> dict[str, str]:
    saga = _saga()
    flow = build_flow(saga)
    return {"constructs.flow.mmd": flow_mermaid(flow), "constructs.flow.dot": flow_dot(flow),
            "constructs.machine.mmd": to_mermaid(compile_saga(saga))}


@pytest.mark.parametrize("name", sorted(_rendered()))
def test_diagram_matches_its_snapshot(name: str) -> None:
    text = _rendered()[name]
    path = SNAPSHOTS / name
    if os.environ.get("CONCORDIA_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, "utf-8")
    assert path.read_text("utf-8") == text, (
        f"{name} changed; if on purpose, rewrite it with CONCORDIA_UPDATE_SNAPSHOTS=1")


def test_the_author_view_draws_each_construct() -> None:
    flow = build_flow(_saga())
    edges = {(e.source, e.target, e.kind, e.label) for e in flow.edges}
    assert ("step_upgrade", "step_pay", "skip", "if false: skip") in edges
    assert ("step_pay", "step_notify", "catch", "catch ChildSagaError") in edges
    assert ("step_confirm", "step_notify", "catch", "catch 503") in edges
    assert ("step_pay", "undo_pay", "fail", "child fails") in edges
    nodes = flow.nodes
    assert nodes["step_pay"].kind == "saga"
    assert "runs saga payment" in nodes["step_pay"].lines
    assert nodes["step_legs"].lines[1:] == ("for each leg in input.legs",
                                            "2 at a time, mode all")
    assert nodes["step_upgrade"].lines[0] == "if input.vip"
    assert nodes["undo_legs"].lines == ("t.unleg", "each item done, last first")


def test_the_machine_has_the_jump_and_the_revert() -> None:
    compiled = compile_saga(_saga())
    assert compiled.move("run_3", "goto_5") == "run_5"
    assert compiled.move("completed", "revert") == "undo_5"
    assert [compiled.labels[f"run_{i}"] for i in range(6)] == [
        "reserve", "legs[*]", "upgrade?", "pay => payment!", "confirm!", "notify"]


def test_the_svg_is_well_formed_and_has_a_box_per_node() -> None:
    flow = build_flow(_saga())
    root = ET.fromstring(flow_svg(flow))
    titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
    for node in flow.nodes.values():
        assert any(node.title in (t or "") for t in titles), node.id
