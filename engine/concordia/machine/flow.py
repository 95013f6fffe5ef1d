"""The saga as its author sees it: steps in order (or stages), and what happens on failure.

This is the diagram ``concordia graph`` draws by default. Forward, the steps run by
stage (a stage is the steps whose dependencies all finished; a sequential saga has one
step a stage), each step drawn as what it is: an action (with its handler), an await (of
an event, with its timeout edge), a policy check (approve onward, reject into
compensation), a child saga (the saga it runs). Retries are a labelled loop on the step.
A conditional step says its condition and has a ``skip`` edge past itself; a fan-out says
what it runs over, how many at once and in which mode; a catch table is one ``catch``
edge per entry, to the step the run goes on with. On failure, the steps that declared a
compensation (and child sagas, undone by their own compensations) are undone in
reverse: one "undo" node per such step, chained back up to ``compensated``; a step with
``compensate: none`` has no undo node and no compensation edge. The engine's full state
machine stays available as :mod:`concordia.machine.graph`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from concordia.definitions.models import (
    ActionStep,
    AwaitStep,
    PolicyStep,
    RetryPolicy,
    Saga,
    SagaStep,
    Step,
)
from concordia.machine.compile import predecessors, stages_of
from concordia.status import RunStatus

NodeKind = Literal["start", "action", "await", "policy", "saga", "undo", "end"]
EdgeKind = Literal["next", "approve", "fail", "reject", "timeout", "retry", "undo", "goto",
                   "catch", "skip"]


@dataclass(frozen=True, slots=True)
class Node:
    """One box of the diagram. ``row`` is its stage (start is -1); ``col`` its place in it."""

    id: str
    kind: NodeKind
    title: str
    lines: tuple[str, ...] = ()
    row: int = 0
    col: int = 0
    step: str | None = None  # the saga step this node is, or undoes


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str = ""


@dataclass
class Flow:
    """The author-level graph of one saga version."""

    saga: Saga
    stages: tuple[tuple[str, ...], ...]
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> None:
        self.nodes[node.id] = node

    def link(self, source: str, target: str, kind: EdgeKind, label: str = "") -> None:
        self.edges.append(Edge(source, target, kind, label))

    @property
    def forward(self) -> list[Node]:
        return [n for n in self.nodes.values()
                if n.kind in ("action", "await", "policy", "saga")]

    @property
    def undo(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "undo"]


def step_id(name: str) -> str:
    return f"step_{name}"


def undo_id(name: str) -> str:
    return f"undo_{name}"


def build_flow(saga: Saga) -> Flow:
    """The author-level graph of ``saga``."""
    stages = stages_of(saga)
    flow = Flow(saga, stages)
    stage_of = {name: i for i, stage in enumerate(stages) for name in stage}
    start_title = f"on {saga.trigger.event}" if saga.trigger else "start"
    flow.add(Node("start", "start", start_title, row=-1))
    last = len(stages)
    flow.add(Node(RunStatus.COMPLETED.value, "end", RunStatus.COMPLETED.value, row=last))
    for i, stage in enumerate(stages):
        for j, name in enumerate(stage):
            flow.add(_step_node(saga, saga.step(name), i, j))
    # Undo nodes: every step that declared a compensation, in the order they are undone.
    undo_order = [name for stage in reversed(stages) for name in reversed(stage)
                  if _compensable(saga.step(name))]
    for name in undo_order:
        step = saga.step(name)
        row = stage_of[name]
        col = [n for n in reversed(stages[row]) if _compensable(saga.step(n))].index(name)
        lines: tuple[str, ...] = ((f"its children undo themselves (saga {step.saga})",)
                 if isinstance(step, SagaStep) else (str(getattr(step, "compensate", "")),))
        if isinstance(step, ActionStep) and step.for_each is not None:
            lines += ("each item done, last first",)
        flow.add(Node(undo_id(name), "undo", f"undo {name}", lines, row=row, col=col,
                      step=name))
    top_row = -1
    for col, end in enumerate((RunStatus.COMPENSATED.value, RunStatus.FAILED.value), 1):
        flow.add(Node(end, "end", end, row=top_row, col=col))
    _forward_edges(flow, saga, stages)
    _construct_edges(flow, saga)
    _failure_edges(flow, saga, stages, stage_of, undo_order)
    for a, b in itertools.pairwise(undo_order):
        flow.link(undo_id(a), undo_id(b), "undo")
    if undo_order:
        flow.link(undo_id(undo_order[-1]), RunStatus.COMPENSATED.value, "undo")
    # An end no edge reaches is no outcome of this saga: "failed" when the first step
    # compensates, "compensated" when no step does.
    targets = {e.target for e in flow.edges}
    for end in (RunStatus.FAILED.value, RunStatus.COMPENSATED.value):
        if end not in targets:
            del flow.nodes[end]
    return flow


def _compensable(step: Step) -> bool:
    return isinstance(step, SagaStep) or (isinstance(step, ActionStep)
                                          and step.compensate is not None)


def _step_node(saga: Saga, step: Step, row: int, col: int) -> Node:
    lines: list[str] = []
    if step.if_ is not None:
        lines.append(f"if {step.if_}")
    if isinstance(step, ActionStep):
        kind: NodeKind = "action"
        lines.append(step.action)
        if step.for_each is not None:
            lines.append(f"for each {step.as_} in {step.for_each}")
            lines.append(f"{step.concurrency} at a time, mode {step.mode}")
        timeout = step.timeout or saga.defaults.timeout
        if timeout:
            lines.append(f"timeout {_seconds(timeout)} per try")
        if step.compensate_none:
            lines.append("no compensation")
    elif isinstance(step, SagaStep):
        kind = "saga"
        lines.append(f"runs saga {step.saga}"
                     + (f" v{step.version}" if step.version is not None else ""))
        if step.timeout:
            lines.append(f"waits at most {_seconds(step.timeout)}")
    elif isinstance(step, AwaitStep):
        kind = "await"
        lines.append(f"await {step.event}")
        if step.timeout is None:
            lines.append("no deadline")
        if step.match:
            lines.append(f"match {step.match}")
    else:
        assert isinstance(step, PolicyStep)
        kind = "policy"
        lines.append(f"policy {step.policy}")
    for emit in step.emit:
        lines.append(f"emits {emit.event}")
    return Node(step_id(step.name), kind, step.name, tuple(lines), row=row, col=col,
                step=step.name)


def _forward_edges(flow: Flow, saga: Saga, stages: tuple[tuple[str, ...], ...]) -> None:
    before = predecessors(saga)
    for name, deps in before.items():
        for source in [step_id(d) for d in deps] or ["start"]:
            _link_forward(flow, source, step_id(name))
    # Steps nothing depends on lead to the end.
    depended = {d for deps in before.values() for d in deps}
    for name in before:
        if name not in depended:
            _link_forward(flow, step_id(name), "completed")
    for step in saga.steps:
        retry = _retry(saga, step)
        if retry is not None and retry.attempts > 1:
            b = retry.backoff
            flow.link(step_id(step.name), step_id(step.name), "retry",
                      f"retry up to {retry.attempts - 1}x, {_seconds(b.initial)}…{_seconds(b.max)}")


def _successors(saga: Saga) -> dict[str, list[str]]:
    """Each step's node and the nodes it leads to when it is done."""
    before = predecessors(saga)
    out: dict[str, list[str]] = {n: [] for n in before}
    for name, deps in before.items():
        for dep in deps:
            out[dep].append(step_id(name))
    return {n: targets or ["completed"] for n, targets in out.items()}


def _construct_edges(flow: Flow, saga: Saga) -> None:
    """A conditional step's ``skip`` edge past itself; a catch entry's edge to where the
    run goes on."""
    after = _successors(saga)
    for step in saga.steps:
        if step.if_ is not None:
            for target in after[step.name]:
                flow.link(step_id(step.name), target, "skip", "if false: skip")
        if not isinstance(step, ActionStep | SagaStep):
            continue
        for clause in step.catch:
            label = "catch " + ", ".join(str(e) for e in clause.errors)
            targets = (after[step.name] if clause.goto == "continue"
                       else [step_id(clause.goto)])
            for target in targets:
                flow.link(step_id(step.name), target, "catch", label)


def _link_forward(flow: Flow, source: str, target: str) -> None:
    if flow.nodes[source].kind == "policy":
        flow.link(source, target, "approve", "approve")
    else:
        flow.link(source, target, "next")


def _failure_edges(flow: Flow, saga: Saga, stages: tuple[tuple[str, ...], ...],
                   stage_of: dict[str, int], undo_order: list[str]) -> None:
    for step in saga.steps:
        target = _undo_entry(step.name, stage_of, undo_order)
        if isinstance(step, AwaitStep):
            if step.timeout is None:  # `timeout: none`: it never times out
                continue
            label = f"timeout {_seconds(step.timeout)}"
            if step.on_timeout == "compensate":
                flow.link(step_id(step.name), target, "timeout", label)
            else:
                flow.link(step_id(step.name), step_id(step.on_timeout), "goto", label)
            continue
        if isinstance(step, PolicyStep):
            flow.link(step_id(step.name), target, "reject", "reject")
            continue
        if isinstance(step, SagaStep):
            flow.link(step_id(step.name), target, "fail", "child fails")
            continue
        retry = _retry(saga, step)
        tries = retry.attempts if retry else 1
        flow.link(step_id(step.name), target, "fail",
                  "fails" + (f" ({tries} tries)" if tries > 1 else ""))


def _undo_entry(name: str, stage_of: dict[str, int], undo_order: list[str]) -> str:
    """Where compensation starts when ``name`` fails: the latest step at or before its
    stage that declared a compensation (the step itself first: one that failed midway is
    undone from its checkpoint), or ``failed`` when nothing before it changed anything."""
    stage = stage_of[name]
    if name in undo_order:
        return undo_id(name)
    for candidate in undo_order:
        if stage_of[candidate] <= stage:
            return undo_id(candidate)
    return RunStatus.FAILED.value


def _retry(saga: Saga, step: Step) -> RetryPolicy | None:
    if not isinstance(step, ActionStep):
        return None
    return step.retry or saga.defaults.retry


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
