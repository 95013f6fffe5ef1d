"""The failure map: a saga's diagram (:mod:`concordia.machine.flow`) with what each failure
point does, drawn from an exploration (:mod:`concordia.explore`).

- :func:`failure_map`: the whole map, one diagram: each step's failure edge says how its
  failures end, the compensations some failure reaches are drawn undone, a step with a
  breach (a silent leftover) is drawn failed, and each effect a failure leaves in place
  is a node of its own beside the step that leaves it;
- :func:`point_diagram`: one failure point, drawn as ``concordia graph --run`` draws a
  run (:mod:`concordia.machine.run_diagram`): its run replayed, the path it took bold,
  where it ended outlined.
"""

from __future__ import annotations

from concordia.definitions.models import Saga
from concordia.explore.model import Exploration, LeftoverKind
from concordia.explore.report import FailurePoint, failure_points
from concordia.explore.search import Explorer
from concordia.machine.flow import Edge, Flow, Node, build_flow, step_id, undo_id
from concordia.machine.flow_render import flow_mermaid, flow_svg
from concordia.machine.marks import Mark
from concordia.machine.run_diagram import Format, draw


def failure_map(saga: Saga, exploration: Exploration, fmt: str = "mermaid") -> str:
    """The whole map of ``saga`` as Mermaid (or SVG)."""
    flow = build_flow(saga)
    points = failure_points(exploration)
    marks: dict[str, Mark] = {}
    outcomes: dict[str, set[str]] = {}
    left: dict[str, tuple[str, str, set[str]]] = {}  # effect -> (its step, what, leaving)
    broken = {v.step for v, _ in exploration.counterexamples if v.step}
    for point in points:
        if point.step is None:
            continue
        outcomes.setdefault(point.step, set()).add(point.path.status)
        for name in point.compensates:
            marks[undo_id(name.split("[")[0])] = Mark.UNDONE
        for lo in point.path.leftovers:
            if lo.kind == LeftoverKind.DECLARED and lo.step == point.step:
                continue  # the step's own declared leftover: said on the step already
            what = ("declared: " + (lo.reason or "") if lo.kind == LeftoverKind.DECLARED
                    else str(lo.kind))
            left.setdefault(lo.name, (lo.step, what, set()))[2].add(point.step)
    for step in outcomes:
        if step_id(step) in flow.nodes:
            marks[step_id(step)] = Mark.FAILED if step in broken else Mark.DONE
    edges: list[Edge] = []
    for edge in flow.edges:
        source = flow.nodes[edge.source].step
        if edge.kind in ("fail", "reject", "timeout") and source is not None and (
                source in outcomes):
            ends = ", ".join(sorted(outcomes[source]))
            edge = Edge(edge.source, edge.target, edge.kind, f"{edge.label} → {ends}")
        edges.append(edge)
    mapped = Flow(flow.saga, flow.stages, dict(flow.nodes), edges)
    # One node an effect left in place, beside its own step's row, reached from each
    # step whose failure leaves it.
    placed: dict[int, int] = {}
    for n, (name, (own, what, leaving)) in enumerate(sorted(left.items())):
        row = flow.nodes[step_id(own)].row
        if row not in placed:
            placed[row] = sum(1 for node in mapped.nodes.values()
                              if node.kind == "undo" and node.row == row)
        node = Node(f"left_{n}", "undo", f"left in place: {name}", (what,), row=row,
                    col=placed[row], step=own)
        placed[row] += 1
        mapped.add(node)
        for step in sorted(leaving):
            mapped.link(step_id(step), node.id, "fail")
        marks[node.id] = Mark.SKIPPED if what.startswith("declared") else Mark.FAILED
    render = flow_svg if fmt == "svg" else flow_mermaid
    return render(mapped, marks)


def point_diagram(explorer: Explorer, point: FailurePoint, fmt: Format = "svg") -> str:
    """One failure point's run, drawn as ``concordia graph --run`` draws a run."""
    view = explorer.view_of(point.path)
    return draw(explorer.saga, fmt, (view.visits(), view.status, view.timed_out()))
