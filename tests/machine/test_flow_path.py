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
