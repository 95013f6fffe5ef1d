"""What ``concordia simulate`` prints: an exploration as text, JSON or Markdown.

- text: one row per path (its faults, its calls in order, how it ends, what it leaves in
  place, its worst case), then a summary per failure point;
- json: the same, for scripts;
- markdown: the compensation gaps tracker's own shape, a section per step (file and
  line, what fails, what it compensates, what is left behind, and where: the system its
  handler names), so every saga gets the audit document for free.

The failure map (Mermaid and SVG) is drawn by the command line and the service, which
own the diagrams' colouring (:mod:`concordia.explore.failure_map`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, AwaitStep, PolicyStep, Saga, SagaStep
from concordia.explore.model import (
    Bounds,
    Exploration,
    Leftover,
    LeftoverKind,
    PathRecord,
    PointKind,
)
from concordia.explore.properties import format_seconds
from concordia.explore.search import Workbench


@dataclass(frozen=True, slots=True)
class FailurePoint:
    """A path's faults, as one failure point: where it fails and what follows."""

    step: str | None  # the step of its first fault (None: no fault)
    faults: str  # its faults in words
    path: PathRecord

    @property
    def compensates(self) -> list[str]:
        return self.path.compensations

    def describe(self) -> str:
        undone = ", ".join(f"`{n}`" for n in self.compensates) or "nothing"
        left = "; ".join(lo.describe() for lo in self.path.leftovers)
        text = f"{self.faults} → compensates {undone}; ends `{self.path.status}`"
        return text + (f"; left in place: {left}" if left else "")


def failure_points(exploration: Exploration) -> list[FailurePoint]:
    """A failure point per complete path with a fault, in the order found."""
    out = []
    for path in exploration.complete_paths:
        faults = path.faults
        if not faults:
            continue
        words = " then ".join(_fault_words(c.point.kind, c.point.key, c.option.label,
                                           c.point.step) for c in faults)
        branches = [c for c in path.choices
                    if c.point.kind in (PointKind.CONDITION, PointKind.ITEMS)]
        if branches:
            words += " (" + ", ".join(f"{c.point.key}: {c.option.label}"
                                      for c in branches) + ")"
        out.append(FailurePoint(faults[0].point.step, words, path))
    return out


def _fault_words(kind: PointKind, key: str, label: str, step: str) -> str:
    if kind == PointKind.ACTION:
        name = key.split("#")[0]
        attempt = key.split("#")[1]
        joint = " " if label.startswith("fails") else ": "
        return f"`{name}` (attempt {attempt}){joint}{label}"
    if kind == PointKind.COMPENSATION:
        name = key.removeprefix("undo ").split("#")[0]
        return f"the compensation of `{name}` {label}"
    if kind == PointKind.POLICY:
        return f"the policy of `{step}` {label}"
    if kind == PointKind.WAIT:
        return f"while waiting for {key.removeprefix('wait ')}: {label}"
    return f"`{step}`: {label}"


# -- text --------------------------------------------------------------------------------------


def render_text(exploration: Exploration) -> str:
    ex = exploration
    lines = [_headline(ex), ""]
    for path in ex.paths:
        faults = "; ".join(c.describe() for c in path.faults) or "no fault"
        branches = [c for c in path.choices if not c.option.fault and c.point.kind in (
            PointKind.CONDITION, PointKind.ITEMS)]
        if branches:
            faults += " [" + ", ".join(f"{c.point.key}: {c.option.label}"
                                       for c in branches) + "]"
        lines.append(f"path {path.number}: {faults}")
        lines.append("  calls: " + (", ".join(c.describe() for c in path.calls) or "none"))
        if path.merged_into is not None:
            lines.append(f"  then as path {path.merged_into} (the same state from there)")
        left = "; ".join(lo.describe() for lo in path.leftovers) or "nothing"
        lines.append(f"  ends {path.status} · left in place: {left} · worst case "
                     f"{format_seconds(path.duration)}")
        for v in path.violations:
            lines.append(f"  ✗ {v.property}: {v.message}")
    points = failure_points(ex)
    if points:
        lines += ["", "Failure points:"]
        lines += [f"  {p.describe()}" for p in points]
    lines += ["", _verdict(ex)]
    return "\n".join(lines)


def _headline(ex: Exploration) -> str:
    complete = len(ex.complete_paths)
    merged = len(ex.paths) - complete
    more = f" ({merged} joining an earlier path's state)" if merged else ""
    cut = " — stopped at the path limit" if ex.truncated else ""
    return (f"saga {ex.saga} v{ex.version}: {len(ex.paths)} paths{more}, {ex.states} states "
            f"(faults ≤ {ex.bounds.faults}, lists of {ex.bounds.items}); worst case "
            f"{format_seconds(ex.worst_duration)}{cut}")


def _verdict(ex: Exploration) -> str:
    breaches = len(ex.counterexamples) + len(ex.static)
    if not breaches:
        return "no property broken on any path"
    return f"{breaches} propert{'y' if breaches == 1 else 'ies'} broken (see concordia prove)"


# -- json --------------------------------------------------------------------------------------


def exploration_dict(exploration: Exploration) -> dict[str, Any]:
    ex = exploration
    return {
        "saga": ex.saga, "version": ex.version,
        "bounds": {"faults": ex.bounds.faults, "items": ex.bounds.items},
        "paths": [p.to_dict() for p in ex.paths],
        "states": ex.states,
        "worst_case_seconds": None if ex.worst_duration == float("inf") else ex.worst_duration,
        "failure_points": [{"step": fp.step, "faults": fp.faults, "path": fp.path.number,
                            "compensates": fp.compensates, "ends": fp.path.status,
                            "left_in_place": [lo.describe() for lo in fp.path.leftovers]}
                           for fp in failure_points(ex)],
        "violations": [{"property": str(v.property), "message": v.message, "hint": v.hint,
                        "step": v.step, "path": p.number}
                       for v, p in ex.counterexamples]
                      + [{"property": str(v.property), "message": v.message, "hint": v.hint,
                          "step": v.step, "path": None} for v in ex.static],
        "truncated": ex.truncated,
    }


def render_json(explorations: Sequence[Exploration]) -> str:
    return json.dumps({"sagas": [exploration_dict(ex) for ex in explorations]}, indent=2)


# -- markdown (the tracker's shape) --------------------------------------------------------


def render_markdown(catalog: Catalog, explorations: Sequence[Exploration],
                    title: str = "Failure paths") -> str:
    lines = [f"# {title}", "",
             "Every path of each saga within the bounds, worked out by the engine's own "
             "planner before anything runs (`concordia simulate SAGA --format markdown`; "
             "this whole file: `python -m concordia.explore.report > "
             "docs/failure-paths.md`). A test keeps it current.", ""]
    for ex in explorations:
        lines += _saga_markdown(catalog, ex)
    return "\n".join(lines).rstrip() + "\n"


def _saga_markdown(catalog: Catalog, ex: Exploration) -> list[str]:
    saga = catalog.saga(ex.saga, ex.version)
    points = failure_points(ex)
    broken = ex.counterexamples
    silent = [v for v, _ in broken]
    status = ("✅ No silent leftover on any path" if not silent and not ex.static
              else f"🔴 {len(silent) + len(ex.static)} problem(s): see `concordia prove`")
    lines = ["---", "", f"## {saga.name} v{saga.version}", "",
             f"**File**: `{saga.source}`  ",
             f"**Explored**: {len(ex.paths)} paths, {ex.states} states (faults ≤ "
             f"{ex.bounds.faults}, lists of {ex.bounds.items})  ",
             f"**Worst case**: {format_seconds(ex.worst_duration)}"
             + (f" (max_duration {format_seconds(saga.max_duration)})"
                if saga.max_duration is not None else "") + "  ",
             f"**Status**: {status}", ""]
    counter = 0
    for index, step in enumerate(saga.steps):
        mine = [p for p in points if p.step == step.name]
        if not mine:
            continue
        counter += 1
        line = _line(catalog, saga, index)
        lines += [f"### FP-{counter:03d}: `{step.name}`", "",
                  f"**File**: `{saga.source}`" + (f" (line {line})" if line else "") + "  ",
                  f"**Step**: `{step.name}` — {_what(step)}  ",
                  f"**Where**: {_where(step)}", "",
                  "| What fails | Compensates | Ends | Left behind | Worst case |",
                  "|---|---|---|---|---|"]
        for p in mine:
            undone = ", ".join(f"`{n}`" for n in p.compensates) or "nothing"
            left = "<br>".join(_left(lo) for lo in p.path.leftovers) or "nothing"
            lines.append(f"| {_cell(p.faults)} | {undone} | `{p.path.status}` | {left} | "
                         f"{format_seconds(p.path.duration)} |")
        gaps = [v for v, _ in broken if v.step == step.name]
        lines.append("")
        if gaps:
            for v in gaps:
                lines += [f"**Gap**: 🔴 {v.message}  ", f"**Recommendation**: {v.hint}", ""]
        else:
            lines += ["**Status**: ✅ every failure here is undone or declared", ""]
    others = [v for v, _ in broken if v.step is None or v.step not in
              {p.step for p in points}] + list(ex.static)
    for v in others:
        lines += [f"**Gap**: 🔴 {v.message}  ", f"**Recommendation**: {v.hint}", ""]
    return lines


def _line(catalog: Catalog, saga: Saga, index: int) -> int:
    return locate_step(catalog, saga, saga.steps[index].name)[0]


def locate_step(catalog: Catalog, saga: Saga, step: str | None) -> tuple[int, int, str]:
    """Where ``step`` is written: (line, column, JSON pointer); the saga's name when
    ``step`` is None or unknown."""
    pointer = "/name"
    for index, candidate in enumerate(saga.steps):
        if candidate.name == step:
            pointer = f"/steps/{index}"
    parsed = catalog.files.get(saga.source)
    if parsed is None or parsed.document is None:
        return (0, 0, pointer)
    line, column = parsed.document.locate(pointer)
    return (line, column, pointer)


def _what(step: object) -> str:
    if isinstance(step, ActionStep):
        undo = (f"undone by `{step.compensate}`" if step.compensate else
                f"`compensate: none` ({step.reason})")
        checkpoints = "; checkpoints before its effect" if step.checkpoints else ""
        fan = f"; for each of `{step.for_each}` ({step.mode})" if step.for_each else ""
        return f"action `{step.action}`, {undo}{checkpoints}{fan}"
    if isinstance(step, AwaitStep):
        return f"await `{step.event}`"
    if isinstance(step, PolicyStep):
        return f"policy `{step.policy}`"
    assert isinstance(step, SagaStep)
    return f"child saga `{step.saga}`"


def _where(step: object) -> str:
    """The system a step's effect lands in: the namespace its handler names."""
    if isinstance(step, ActionStep):
        system = step.action.split(".")[0]
        return f"external system `{system}` (handler `{step.action}`)"
    if isinstance(step, SagaStep):
        return f"the child saga `{step.saga}` and the systems it touches"
    if isinstance(step, AwaitStep):
        return "nothing (it waits for an event)"
    return "nothing (a decision)"


def _left(lo: Leftover) -> str:
    if lo.kind == LeftoverKind.DECLARED:
        return f"`{lo.name}` (declared: {_cell(lo.reason or '')})"
    if lo.kind == LeftoverKind.HALTED:
        return f"`{lo.name}` (until the run is retried)"
    if lo.kind == LeftoverKind.UNRECORDED:
        return f"🔴 `{lo.name}` (landed unrecorded)"
    return f"🔴 `{lo.name}` (not compensated)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def tree_markdown(paths: Sequence[str], bounds: Bounds | None = None) -> str:
    """The Markdown report of every saga of a tree (each one's latest version)."""
    catalog = Catalog.load_strict(paths)
    bench = Workbench(catalog)
    latest = [catalog.saga(name) for name in sorted({n for n, _ in catalog.sagas})]
    explorations = [bench.explorer(saga, bounds or Bounds()).explore() for saga in latest]
    return render_markdown(catalog, explorations, "Failure paths of the reference sagas")


def main() -> None:  # pragma: no cover - exercised by the docs test through its output
    """``python -m concordia.explore.report [PATH...] > docs/failure-paths.md``."""
    import sys

    print(tree_markdown(sys.argv[1:] or ["definitions", "policies"]), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
