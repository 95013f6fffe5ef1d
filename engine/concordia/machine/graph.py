"""The saga's diagram, drawn from the compiled machine's transitions (Mermaid or DOT)."""

from __future__ import annotations

from concordia.machine.compile import TERMINAL, CompiledSaga


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
