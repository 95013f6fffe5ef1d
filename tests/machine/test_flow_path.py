"""The path a run took through its saga's author-level diagram."""

from __future__ import annotations

from concordia.definitions.models import Saga
from concordia.machine.flow import build_flow
from concordia.machine.flow_path import path_taken
from tests.runtime.sagas import load_catalog

SAGA: Saga = load_catalog({
    "name": "s", "version": 1, "steps": [
        {"name": "a", "action": "x.a", "compensate": "x.ua"},
        {"name": "b", "action": "x.b", "compensate": "x.ub",
         "retry": {"attempts": 3, "backoff": {"initial": "1s", "factor": 2, "max": "4s"}}},
        {"name": "c", "action": "x.c", "compensate": "none", "reason": "last"}]}).saga("s")


def test_the_path_taken_follows_the_run_forward_then_back() -> None:
    flow = build_flow(SAGA)
    marks = {"step_a": "done", "step_b": "done", "step_c": "failed", "undo_b": "undone",
             "undo_a": "undone", "compensated": "done"}
    taken = {(flow.edges[i].source, flow.edges[i].target, flow.edges[i].kind)
             for i in path_taken(flow, marks, retried={"step_b"})}
    assert taken == {("start", "step_a", "next"), ("step_a", "step_b", "next"),
                     ("step_b", "step_c", "next"), ("step_b", "step_b", "retry"),
                     ("step_c", "undo_b", "fail"), ("undo_b", "undo_a", "undo"),
                     ("undo_a", "compensated", "undo")}
    running = {"step_a": "done", "step_b": "active"}
    assert {(flow.edges[i].source, flow.edges[i].target)
            for i in path_taken(flow, running)} == {("start", "step_a"), ("step_a", "step_b")}


BRANCHING: Saga = load_catalog({
    "name": "t", "version": 1, "steps": [
        {"name": "a", "action": "x.a", "compensate": "none", "reason": "reads",
         "if": "input.go"},
        {"name": "b", "action": "x.b", "compensate": "none", "reason": "reads",
         "catch": [{"errors": ["KeyError"], "goto": "continue"}]},
        {"name": "c", "action": "x.c", "compensate": "none", "reason": "reads"}]}).saga("t")


def test_skip_and_catch_edges_are_taken_when_the_step_was_skipped_or_caught() -> None:
    flow = build_flow(BRANCHING)
    marks = {"step_a": "skipped", "step_b": "caught", "step_c": "done", "completed": "done"}
    taken = {(flow.edges[i].source, flow.edges[i].target, flow.edges[i].kind)
             for i in path_taken(flow, marks)}
    assert ("step_a", "step_b", "skip") in taken
    assert ("step_b", "step_c", "catch") in taken
    # a step retried, neither skipped nor caught: its skip and catch edges stay untaken
    retried = {"step_a": "done", "step_b": "done", "step_c": "done", "completed": "done"}
    kinds = {flow.edges[i].kind for i in path_taken(flow, retried, retried={"step_a",
                                                                             "step_b"})}
    assert "skip" not in kinds
    assert "catch" not in kinds


def test_a_drawing_shows_the_path_bold_the_rest_faint_and_where_the_run_stands() -> None:
    from concordia.machine.flow_render import flow_mermaid, flow_svg

    flow = build_flow(SAGA)
    marks = {"step_a": "done", "step_b": "active"}
    path = path_taken(flow, marks)
    svg = flow_svg(flow, marks, path, {"step_b"})
    assert svg.count('class="edge taken next"') == 2
    assert svg.count('stroke="#c8c8c8"') == len(flow.edges) - 2
    assert '<g id="step_b" class="mark-active current">' in svg
    assert 'stroke="#d84315" stroke-width="3.6"' in svg
    plain = flow_svg(flow)
    assert "taken" not in plain
    assert "current" not in plain
    mermaid = flow_mermaid(flow, marks, path, {"step_b"})
    assert "    linkStyle 0,1 stroke-width:4px" in mermaid
    assert "    class step_b current" in mermaid
