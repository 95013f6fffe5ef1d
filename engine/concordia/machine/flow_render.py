"""The author-level diagram (:mod:`concordia.machine.flow`) as Mermaid, DOT or SVG.

``marks`` colours nodes by what a run did (``done``, ``active``, ``failed``, ``undone``,
``undo-failed``), for ``concordia graph --run``; ``path`` (edge indexes, see
:mod:`concordia.machine.flow_path`) draws the edges a run travelled bold and the others
faint, and ``current`` outlines the nodes where the run stands. Node ids are derived from step names
(identifiers by the schema); titles and labels are quoted or escaped for each format.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from concordia.machine import svg
from concordia.machine.flow import Edge, Flow, Node
from concordia.machine.marks import Mark
from concordia.status import RunStatus

Marks = Mapping[str, str]

_FILL = {"action": "#ffffff", "await": "#e8f1fb", "policy": "#fdf3e1", "saga": "#eef6ee",
         "undo": "#f6eefc", "start": "#eeeeee", "end": "#eeeeee"}
_MARK_FILL = {Mark.DONE: "#d9f2d9", Mark.ACTIVE: "#fff2b3", Mark.FAILED: "#f8d0d0",
              Mark.UNDONE: "#dcdcf5", Mark.UNDO_FAILED: "#f8d0d0", Mark.CAUGHT: "#ffe0b2",
              Mark.SKIPPED: "#f2f2f2"}
_EDGE = {"next": svg.Style(stroke="#333333"), "approve": svg.Style(stroke="#2e7d32"),
         "fail": svg.Style(stroke="#c62828", dash="5 3"),
         "reject": svg.Style(stroke="#c62828", dash="5 3"),
         "timeout": svg.Style(stroke="#ef6c00", dash="5 3"),
         "goto": svg.Style(stroke="#ef6c00", dash="5 3"),
         "retry": svg.Style(stroke="#1565c0"),
         "catch": svg.Style(stroke="#ad1457", dash="6 2"),
         "skip": svg.Style(stroke="#757575", dash="2 4"),
         "undo": svg.Style(stroke="#6a1b9a", dash="2 3", width=1.6)}
_FAINT = "#c8c8c8"
_CURRENT = "#d84315"


# -- Mermaid -----------------------------------------------------------------------------

def flow_mermaid(flow: Flow, marks: Marks | None = None, path: Collection[int] | None = None,
                 current: Collection[str] = ()) -> str:
    """A Mermaid ``flowchart TD``."""
    lines = ["flowchart TD"]
    for node in flow.nodes.values():
        lines.append(f"    {node.id}{_mermaid_shape(node)}")
    for edge in flow.edges:
        arrow = {"fail": "-.->", "reject": "-.->", "timeout": "-.->", "goto": "-.->",
                 "undo": "-.->", "catch": "-.->", "skip": "-.->"}.get(edge.kind, "-->")
        label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
        lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
    lines += ["    classDef await fill:#e8f1fb,stroke:#1565c0",
              "    classDef policy fill:#fdf3e1,stroke:#ef6c00",
              "    classDef saga fill:#eef6ee,stroke:#2e7d32",
              "    classDef undo fill:#f6eefc,stroke:#6a1b9a,stroke-dasharray:4 3"]
    for kind in ("await", "policy", "saga", "undo"):
        ids = [n.id for n in flow.nodes.values() if n.kind == kind]
        if ids:
            lines.append(f"    class {','.join(ids)} {kind}")
    if marks:
        for mark, fill in _MARK_FILL.items():
            ids = [node_id for node_id, m in marks.items() if m == mark]
            if ids:
                name = mark.replace("-", "_")
                lines.append(f"    classDef {name} fill:{fill},stroke:#333,stroke-width:2px")
                lines.append(f"    class {','.join(ids)} {name}")
    if path:
        lines.append(f"    linkStyle {','.join(map(str, sorted(path)))} stroke-width:4px")
    if current:
        lines.append(f"    classDef current stroke:{_CURRENT},stroke-width:4px")
        lines.append(f"    class {','.join(sorted(current))} current")
    return "\n".join(lines) + "\n"


def _mermaid_shape(node: Node) -> str:
    text = _mermaid_text("<br/>".join((f"<b>{node.title}</b>", *node.lines))
                         if node.lines else node.title, html=True)
    if node.kind == "start":
        return f'(("{text}"))'
    if node.kind == "end":
        return f'(["{text}"])'
    if node.kind == "await":
        return f'[/"{text}"/]'
    if node.kind == "policy":
        return f'{{{{"{text}"}}}}'
    if node.kind == "saga":
        return f'[["{text}"]]'
    return f'["{text}"]'


def _mermaid_text(text: str, html: bool = False) -> str:
    # Mermaid ends a quoted label at `"`; `#quot;` is its escape. Pipes end edge labels.
    out = text.replace('"', "#quot;").replace("|", "#124;")
    if not html:
        out = out.replace("<", "#lt;").replace(">", "#gt;")
    return out


# -- DOT -----------------------------------------------------------------------------------

def flow_dot(flow: Flow, marks: Marks | None = None) -> str:
    """A Graphviz digraph, the compensation chain in a cluster beside the steps."""
    name = f"{flow.saga.name}_v{flow.saga.version}"
    lines = [f'digraph "{name}" {{', "    rankdir=TB;", "    newrank=true;",
             '    node [fontname="Helvetica", fontsize=11];',
             '    edge [fontname="Helvetica", fontsize=10];']
    shapes = {"start": "circle", "end": "doublecircle", "action": "box", "await":
              "parallelogram", "policy": "hexagon", "saga": "box3d", "undo": "box"}
    undo = [n for n in flow.nodes.values() if n.kind == "undo"]
    for node in flow.nodes.values():
        if node.kind == "undo":
            continue
        lines.append("    " + _dot_node(node, shapes[node.kind], marks))
    if undo:
        lines.append('    subgraph cluster_compensation { label="compensation"; '
                     'style=dashed; color="#6a1b9a";')
        for node in undo:
            lines.append("        " + _dot_node(node, shapes["undo"], marks))
        lines.append("    }")
    for edge in flow.edges:
        lines.append("    " + _dot_edge(edge))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(node: Node, shape: str, marks: Marks | None) -> str:
    label = "\\n".join(_dot_text(t) for t in (node.title, *node.lines))
    mark = (marks or {}).get(node.id)
    fill = _MARK_FILL.get(Mark(mark), _FILL[node.kind]) if mark else _FILL[node.kind]
    style = "rounded,filled" if node.kind in ("action", "undo") else "filled"
    if node.kind == "undo":
        style += ",dashed"
    return (f'{node.id} [label="{label}", shape={shape}, style="{style}", '
            f'fillcolor="{fill}"];')


def _dot_edge(edge: Edge) -> str:
    style = _EDGE[edge.kind]
    attrs = [f'color="{style.stroke}"']
    if style.dash:
        attrs.append("style=dashed")
    if edge.label:
        attrs.append(f'label="{_dot_text(edge.label)}"')
    if edge.kind in ("fail", "reject", "timeout", "undo"):
        attrs.append("constraint=false")
    return f"{edge.source} -> {edge.target} [{', '.join(attrs)}];"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- SVG (laid out here, drawn by concordia.machine.svg) --------------------------------------

_W = 230.0
_GAP_X = 40.0
_GAP_Y = 56.0
_LANE = 190.0  # between the steps and the compensation chain: labels, then lanes
_LANES = 60.0  # the part of it where edges run up or down


def flow_svg(flow: Flow, marks: Marks | None = None, path: Collection[int] | None = None,
             current: Collection[str] = ()) -> str:
    return svg.render(flow_drawing(flow, marks, path, current))


def flow_drawing(flow: Flow, marks: Marks | None = None, path: Collection[int] | None = None,
                 current: Collection[str] = ()) -> svg.Drawing:
    """Steps top to bottom by stage on the left; compensations beside them, going up."""
    marks = marks or {}
    rows = range(-1, len(flow.stages) + 1)
    height = {r: max([svg.box_height(len(n.lines)) for n in flow.nodes.values()
                      if n.row == r and n.kind != "end"] + [40.0]) for r in rows}
    top = {}
    y = 44.0
    for r in rows:
        top[r] = y
        y += height[r] + _GAP_Y
    # Room on the left for the retry loops' labels and the jumps back (goto).
    loops = [len(e.label) for e in flow.edges if e.kind in ("retry", "goto", "catch", "skip")]
    left = 60 + max([svg.CHAR_WIDTH * n + 60 for n in loops] + [40.0])
    left_cols = max([len(s) for s in flow.stages] + [1])
    right_x = left + left_cols * (_W + _GAP_X) - _GAP_X + _LANE
    right_cols = max([n.col + 1 for n in flow.undo] + [1])
    width = right_x + max(right_cols, 2) * (_W + _GAP_X) + 40
    boxes: dict[str, svg.Box] = {}
    ends: list[str] = [e for e in (RunStatus.FAILED.value, RunStatus.COMPENSATED.value)
                       if e in flow.nodes]
    for node in flow.nodes.values():
        boxes[node.id] = _place(node, top, height, left, right_x, ends, marks)
    drawing = svg.Drawing(width, y + 30, f"saga {flow.saga.name} v{flow.saga.version}")
    drawing.boxes = list(boxes.values())
    lane = _Lanes(right_x - _LANES, right_x - 12)
    for i, edge in enumerate(flow.edges):
        line = _route(edge, boxes, lane, top, height)
        if path is not None:
            _highlight(line, edge, i in path)
        drawing.lines.append(line)
    for node_id in current:
        if node_id in boxes:
            box = boxes[node_id]
            box.style = svg.Style(fill=box.style.fill, stroke=_CURRENT, width=3.6,
                                  dash=box.style.dash)
            box.css_class = (box.css_class + " current").strip()
    drawing.legend = [("next", _EDGE["next"]), ("fails / rejected", _EDGE["fail"]),
                      ("timeout", _EDGE["timeout"]), ("retry", _EDGE["retry"]),
                      ("compensation", _EDGE["undo"])]
    if any(e.kind == "catch" for e in flow.edges):
        drawing.legend.append(("caught", _EDGE["catch"]))
    if any(e.kind == "skip" for e in flow.edges):
        drawing.legend.append(("condition false", _EDGE["skip"]))
    return drawing


def _mark_class(marks: Marks, node_id: str) -> str:
    mark = marks.get(node_id)
    return f"mark-{mark}" if mark else ""


def _place(node: Node, top: dict[int, float], height: dict[int, float], left: float,
           right_x: float, ends: list[str], marks: Marks) -> svg.Box:
    shapes: dict[str, svg.Shape] = {"start": "stadium", "end": "stadium", "action": "round",
                                    "await": "parallelogram", "policy": "hexagon",
                                    "saga": "box", "undo": "round"}
    shape = shapes[node.kind]
    mark = marks.get(node.id)
    fill = _MARK_FILL.get(Mark(mark), _FILL[node.kind]) if mark else _FILL[node.kind]
    style = svg.Style(fill=fill,
                      stroke="#6a1b9a" if node.kind == "undo" else "#444444",
                      dash="4 3" if node.kind == "undo" else "",
                      width=2.4 if marks.get(node.id) == Mark.ACTIVE else 1.2)
    if node.kind in ("start", "end"):
        w, h = min(max(150.0, 7.8 * len(node.title) + 36), _W + 60), 40.0
        if node.id in ends:
            x = right_x + ends.index(node.id) * (_W + _GAP_X) + (_W - w) / 2
        else:
            x = left + (_W - w) / 2
        return svg.Box(node.id, x, top[node.row] + (height[node.row] - h) / 2, w, h, shape,
                       node.title, style=style, tooltip=node.title,
                       css_class=_mark_class(marks, node.id))
    h = svg.box_height(len(node.lines))
    x = (right_x if node.kind == "undo" else left) + node.col * (_W + _GAP_X)
    tooltip = "\n".join((node.title, *node.lines))
    return svg.Box(node.id, x, top[node.row], _W, h, shape, node.title, node.lines, style,
                   tooltip=tooltip, css_class=_mark_class(marks, node.id))


def _highlight(line: svg.Line, edge: Edge, taken: bool) -> None:
    """A travelled edge drawn bold in its colour; one not travelled, faint."""
    style = line.style
    if taken:
        line.style = svg.Style(stroke=style.stroke, width=3.4, dash=style.dash)
        line.css_class = f"edge taken {edge.kind}"
    else:
        line.style = svg.Style(stroke=_FAINT, width=style.width, dash=style.dash)
        line.css_class = f"edge {edge.kind}"


class _Lanes:
    """Vertical lanes between the steps and the compensations, one per edge crossing."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end, self.used = start, end, 0

    def next(self) -> float:
        x = self.start + (self.used * 9.0) % max(self.end - self.start, 1.0)
        self.used += 1
        return x


def _route(edge: Edge, boxes: dict[str, svg.Box], lanes: _Lanes, top: dict[int, float],
           height: dict[int, float]) -> svg.Line:
    a, b = boxes[edge.source], boxes[edge.target]
    style = _EDGE[edge.kind]
    if edge.kind == "retry":
        x, y = a.x, a.cy
        half = svg.CHAR_WIDTH * len(edge.label) / 2 + 4
        return svg.Line([(x, y - 8), (x - 46, y - 24), (x - 46, y), (x - 46, y + 24),
                         (x, y + 8)], edge.label, (x - 52 - half, y), style, curve=True)
    if edge.kind in ("goto", "catch", "skip"):
        bend = min(a.x, b.x) - (100 if edge.kind == "goto" else 60 if edge.kind == "catch"
                                else 30)
        return svg.Line([(a.x, a.cy), (bend, (a.cy + b.cy) / 2), (b.x, b.cy)], edge.label,
                        (bend + 40, (a.cy + b.cy) / 2), style, curve=True)
    if edge.kind in ("fail", "reject", "timeout"):
        # Down into the gap below the step (a level per column, so that the edges of a
        # stage's steps do not run on one line), across to a lane, then to the undo node:
        # into its side when it is the first of its row, from above otherwise.
        row = [x for x in boxes.values() if abs(x.y - a.y) < 1]
        col = round((a.x - min(x.x for x in row)) / (_W + _GAP_X))
        gap_y = max(x.y + x.h for x in row) + 12 + 9 * col
        lane = lanes.next()
        drop = a.x + a.w - 16
        points = [(drop, a.y + a.h), (drop, gap_y), (lane, gap_y)]
        if b.x - lane > _W:  # another undo node of the row stands in the way
            points += [(lane, b.y - 12), (b.cx, b.y - 12), (b.cx, b.y)]
        else:
            points += [(lane, b.cy), (b.x, b.cy)]
        half = svg.CHAR_WIDTH * len(edge.label) / 2 + 4
        return svg.Line(points, edge.label, (drop + 8 + half, gap_y), style)
    if edge.kind == "undo":
        if abs(a.y - b.y) < 1:  # two undo nodes of one stage, side by side
            return svg.Line([(a.x + a.w, a.cy), (b.x, b.cy)], edge.label, None, style)
        mid = b.y + b.h + (a.y - b.y - b.h) / 2 if a.y > b.y + b.h else b.y + b.h + 10
        return svg.Line([(a.cx, a.y), (a.cx, mid), (b.cx, mid), (b.cx, b.y + b.h)],
                        edge.label, None, style)
    # next / approve: bottom of one to the top of the other, squared off between rows.
    mid = a.y + a.h + (b.y - a.y - a.h) / 2
    points = [(a.cx, a.y + a.h), (a.cx, mid), (b.cx, mid), (b.cx, b.y)]
    if a.cx == b.cx:
        points = [(a.cx, a.y + a.h), (b.cx, b.y)]
    return svg.Line(points, edge.label, (b.cx + 8 + 3 * len(edge.label), mid), style)
