"""The engine's view of a saga: the compiled machine's states and transitions, drawn as
Mermaid, DOT or SVG (``concordia graph --detail machine``). The author's view of the same
saga is :mod:`concordia.machine.flow`."""

from __future__ import annotations

from typing import Any

from concordia.machine.compile import TERMINAL, CompiledSaga
from concordia.status import RunStatus


def to_mermaid(compiled: CompiledSaga, current: str | None = None) -> str:
    """A Mermaid ``stateDiagram-v2``; ``current`` (a state id) is highlighted."""
    lines = ["stateDiagram-v2"]
    for state in compiled.states():
        label = compiled.labels.get(state, state)
        lines.append(f'    state "{_esc(label)}" as {state}')
    lines.append(f"    [*] --> {compiled.initial}")
    for (source, event), target in sorted(compiled.transitions.items()):
        lines.append(f"    {source} --> {target} : {event}")
    for end in TERMINAL:
        lines.append(f"    {end} --> [*]")
    if current:
        lines.append("    classDef current fill:#f96,stroke:#333,stroke-width:3px")
        lines.append(f"    class {current} current")
    return "\n".join(lines) + "\n"


def to_dot(compiled: CompiledSaga, current: str | None = None) -> str:
    """A Graphviz DOT digraph; ``current`` is filled."""
    name = f"{compiled.saga.name}_v{compiled.saga.version}"
    lines = [f'digraph "{name}" {{', "    rankdir=LR;", '    node [shape=box, style=rounded];',
             '    __start [shape=point];', f"    __start -> {compiled.initial};"]
    for state in compiled.states():
        attrs = [f'label="{_esc(compiled.labels.get(state, state))}"']
        if state in TERMINAL:
            attrs.append("peripheries=2")
        if state == current:
            attrs.append('style="rounded,filled", fillcolor="#ff9966"')
        lines.append(f"    {state} [{', '.join(attrs)}];")
    for (source, event), target in sorted(compiled.transitions.items()):
        lines.append(f'    {source} -> {target} [label="{event}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace('"', "'")


def to_svg(compiled: CompiledSaga, current: str | None = None) -> str:
    """The machine as SVG, drawn without Graphviz: forward states down the left, undo
    states beside them, the ends below and above, every transition labelled."""
    from concordia.machine import svg

    n = len(compiled.stages)
    w, h, gap_x, gap_y, left, top = 230.0, 44.0, 170.0, 46.0, 60.0, 40.0
    end_w = 150.0
    col_x = [left, left + w + gap_x, left + 2 * (w + gap_x)]
    place: dict[str, tuple[float, float, float]] = {}
    for i in range(n):
        row = top + (i + 1) * (h + gap_y)
        place[f"run_{i}"] = (col_x[0], row, w)
        place[f"undo_{i}"] = (col_x[1], row, w)
    place[RunStatus.COMPLETED.value] = (col_x[0], top + (n + 1) * (h + gap_y), w)
    centre = col_x[1] + w / 2
    ends = (RunStatus.COMPENSATED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)
    for k, final in enumerate(ends):
        place[final] = (centre + (k - 1) * (end_w + 16) - end_w / 2, top, end_w)
    place[RunStatus.COMPENSATION_FAILED.value] = (col_x[2], top + (n / 2 + 0.5) * (h + gap_y),
                                                  w)
    boxes: dict[str, svg.Box] = {}
    for state in compiled.states():
        x, y, width = place[state]
        style = svg.Style(fill="#ff9966" if state == current else (
            "#eeeeee" if state in (*TERMINAL, "compensation_failed") else "#ffffff"),
            width=2.4 if state == current else 1.2)
        boxes[state] = svg.Box(state, x, y, width, h,
                               "stadium" if state in TERMINAL else "round",
                               compiled.labels.get(state, state), style=style,
                               tooltip=f"{state}: {compiled.labels.get(state, state)}")
    drawing = svg.Drawing(col_x[2] + w + 40, top + (n + 2) * (h + gap_y) + 20,
                          f"saga {compiled.saga.name} v{compiled.saga.version} (state machine)")
    drawing.boxes = list(boxes.values())
    # One line a pair of states, naming every event that moves along it; a pair joined
    # both ways (stuck / resume) gets two lines, set apart.
    pairs: dict[tuple[str, str], list[str]] = {}
    for (source, event), target in sorted(compiled.transitions.items()):
        pairs.setdefault((source, target), []).append(event)
    for (source, target), events in pairs.items():
        a, b = boxes[source], boxes[target]
        start, end = _border(a, b.cx, b.cy), _border(b, a.cx, a.cy)
        if (target, source) in pairs:
            start, end = _shift(start, end, 6.0)
        # Near the end for the fan of edges into the ends, so their labels stand apart.
        at = 0.75 if target in TERMINAL and target != RunStatus.COMPLETED.value else 0.4
        label_at = (start[0] + (end[0] - start[0]) * at, start[1] + (end[1] - start[1]) * at)
        drawing.lines.append(svg.Line([start, end], ", ".join(events), label_at))
    return svg.render(drawing)


def _shift(start: tuple[float, float], end: tuple[float, float], by: float
           ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The segment moved ``by`` to its right (seen from start to end)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    ox, oy = -dy / length * by, dx / length * by
    return (start[0] + ox, start[1] + oy), (end[0] + ox, end[1] + oy)


def _border(box: Any, tx: float, ty: float) -> tuple[float, float]:
    """Where the line from ``box``'s centre towards (tx, ty) leaves the box."""
    dx, dy = tx - box.cx, ty - box.cy
    if dx == 0 and dy == 0:
        return box.cx, box.cy
    scale = min(box.w / 2 / abs(dx) if dx else float("inf"),
                box.h / 2 / abs(dy) if dy else float("inf"))
    return box.cx + dx * scale, box.cy + dy * scale
