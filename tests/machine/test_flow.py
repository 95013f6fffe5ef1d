"""The author-level diagram: what it draws for each kind of step, and every shipped saga
rendered in each format (SVG without Graphviz)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from concordia.cli import main
from concordia.definitions import Catalog
from concordia.definitions.models import Saga
from concordia.machine import compile_saga, to_svg
from concordia.machine.flow import Flow, build_flow
from concordia.machine.flow_render import flow_dot, flow_mermaid, flow_svg
from tests.conftest import DEFINITIONS, POLICIES

SHIPPED = Catalog.load_strict([DEFINITIONS, POLICIES])
SVG = "{http://www.w3.org/2000/svg}"

FANOUT = """\
name: fanout
version: 1
steps:
  - name: order
    action: shop.order
    compensate: shop.cancel_order
    retry: {attempts: 4, backoff: {initial: 1s, max: 8s}}
  - name: pay
    action: shop.pay
    compensate: shop.refund
    depends_on: [order]
  - name: notify
    action: shop.notify
    compensate: none
    reason: an email cannot be unsent
    depends_on: [order]
  - name: approve
    policy: refunds
    depends_on: [pay, notify]
  - name: wait_ship
    await: shop.shipped
    timeout: 2d
    on_timeout: pay
  - name: wait_receipt
    await: shop.received
    timeout: 30m
"""


def _saga(text: str, tmp_path: Path) -> Saga:
    from concordia.definitions.documents import parse_bytes

    parsed = parse_bytes(text.encode(), str(tmp_path / "s.yaml"))
    assert parsed.has_errors is False, parsed.problems
    [saga] = parsed.sagas
    return saga


def _edges(flow: Flow, kind: str) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.label) for e in flow.edges if e.kind == kind}


def test_steps_by_stage_and_each_kind_drawn_as_what_it_is(tmp_path: Path) -> None:
    flow = build_flow(_saga(FANOUT, tmp_path))
    rows = {n.step: (n.row, n.col) for n in flow.forward}
    assert rows == {"order": (0, 0), "pay": (1, 0), "notify": (1, 1), "approve": (2, 0),
                    "wait_ship": (3, 0), "wait_receipt": (4, 0)}
    kinds = {n.step: n.kind for n in flow.forward}
    assert kinds["approve"] == "policy"
    assert kinds["wait_ship"] == "await"
    assert "await shop.shipped" in flow.nodes["step_wait_ship"].lines
    assert "policy refunds" in flow.nodes["step_approve"].lines
    # Forward edges follow depends_on; a policy approves onward.
    assert _edges(flow, "next") >= {("step_order", "step_pay", ""),
                                     ("step_order", "step_notify", ""),
                                     ("step_pay", "step_approve", ""),
                                     ("step_notify", "step_approve", "")}
    assert ("step_approve", "step_wait_ship", "approve") in _edges(flow, "approve")


def test_compensation_edges_only_where_a_step_declares_one(tmp_path: Path) -> None:
    flow = build_flow(_saga(FANOUT, tmp_path))
    assert {n.step for n in flow.undo} == {"order", "pay"}  # notify says none
    assert _edges(flow, "undo") == {("undo_pay", "undo_order", ""),
                                    ("undo_order", "compensated", "")}
    # A failing step enters compensation at itself (it may have checkpointed), a step
    # without one at the latest step before it that has one.
    assert ("step_notify", "undo_pay", "fails") in _edges(flow, "fail")
    assert ("step_order", "undo_order", "fails (4 tries)") in _edges(flow, "fail")
    assert ("step_approve", "undo_pay", "reject") in _edges(flow, "reject")
    # The first step compensates, so nothing ends "failed" with nothing undone.
    assert "failed" not in flow.nodes


def test_retry_and_timeout_edges_are_labelled(tmp_path: Path) -> None:
    flow = build_flow(_saga(FANOUT, tmp_path))
    assert _edges(flow, "retry") == {("step_order", "step_order", "retry up to 3x, 1s…8s")}
    assert _edges(flow, "goto") == {("step_wait_ship", "step_pay", "timeout 2d")}
    assert _edges(flow, "timeout") == {("step_wait_receipt", "undo_pay", "timeout 30m")}


def test_a_saga_that_compensates_nothing_only_fails(tmp_path: Path) -> None:
    flow = build_flow(_saga("name: s\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n"
                            "    compensate: none\n    reason: read-only\n", tmp_path))
    assert flow.undo == []
    assert "compensated" not in flow.nodes
    assert _edges(flow, "fail") == {("step_a", "failed", "fails")}


@pytest.mark.parametrize("key", sorted(SHIPPED.sagas))
def test_every_shipped_saga_renders_in_every_format(key: tuple[str, int]) -> None:
    saga = SHIPPED.sagas[key]
    flow = build_flow(saga)
    names = [s.name for s in saga.steps]
    mermaid = flow_mermaid(flow)
    assert mermaid.startswith("flowchart TD\n")
    dot = flow_dot(flow)
    assert dot.startswith("digraph ")
    assert dot.rstrip().endswith("}")
    svg = flow_svg(flow)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == f"{SVG}svg"
    drawn = {g.get("id") for g in root.iter(f"{SVG}g")}
    assert {f"step_{n}" for n in names} <= drawn
    assert "completed" in drawn
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for name in names:
        assert name in text
        assert name in mermaid
    for out in (mermaid, dot, svg):
        assert "run_0" not in out  # the engine's ids belong to --detail machine
    machine = ET.fromstring(to_svg(compile_saga(saga)))
    assert {g.get("id") for g in machine.iter(f"{SVG}g")} >= {"run_0", "undo_0", "completed",
                                                               "compensation_failed"}


def test_text_from_definitions_is_escaped(tmp_path: Path) -> None:
    saga = _saga(FANOUT.replace("name: fanout", "name: fanout\ndescription: x")
                 .replace("await: shop.received", "await: shop.received\n"
                          "    match: \"event.data.note == '<b>&\\\"|'\""), tmp_path)
    svg = flow_svg(build_flow(saga))
    ET.fromstring(svg)
    assert "<b>&" not in svg
    mermaid = flow_mermaid(build_flow(saga))
    match_line = next(ln for ln in mermaid.splitlines() if ln.lstrip().startswith("step_wait_r"))
    assert '"' not in match_line.split('"', 1)[1].rsplit('"', 1)[0]
    assert "|" not in match_line


def test_cli_graph_defaults_to_the_authors_view_and_svg_needs_no_graphviz(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no `dot` to be found
    assert main(["graph", "cerebros_nas", "--format", "svg", "--definitions", DEFINITIONS,
                 POLICIES]) == 0
    svg = capsys.readouterr().out
    assert "await_completion" in svg
    assert "undo dispatch_training" in svg
    ET.fromstring(svg)
    assert main(["graph", "cerebros_nas", "--detail", "machine", "--format", "svg",
                 "--definitions", DEFINITIONS, POLICIES]) == 0
    ET.fromstring(capsys.readouterr().out)


def test_cli_graph_unknown_saga_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "nope", "--definitions", DEFINITIONS, POLICIES]) == 2
    err = capsys.readouterr().err
    assert "no saga 'nope'" in err
    assert "cerebros_nas v1" in err
