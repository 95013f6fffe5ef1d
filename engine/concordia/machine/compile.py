"""Compile a saga definition into a python-statemachine class and its transition table.

The states: ``run_<i>`` for each forward stage (a stage is the set of steps whose
dependencies are all in earlier stages; a sequential saga has one step per stage),
``undo_<i>`` for compensating that stage, and the ends ``completed``, ``compensated``,
``failed`` (nothing to undo), ``cancelled`` and ``compensation_failed`` (resumable).

The language's constructs show in the machine: a jump ahead (an await's ``on_timeout``, a
catch entry's ``goto``) is a ``goto_<j>`` transition; ``completed`` is left by ``revert``
into the last undo state, the move a parent makes when it compensates a completed child
saga; and a stage's label marks conditional steps (``?``), fan-outs (``[*]``), child sagas
(``=> saga``) and catch tables (``!``).

The class is built once per (saga, version) and cached. The runtime does not keep machine
instances alive for suspended runs (each costs ~48 KB); it checks every move against the
transition table exported from the compiled class, so the class stays the single truth of
which moves are legal while a move costs one dict lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from statemachine.io import create_machine_class_from_definition

from concordia.definitions.identity import fingerprint
from concordia.definitions.models import ActionStep, AwaitStep, Saga, SagaStep, Step
from concordia.errors import IllegalTransitionError
from concordia.status import FINAL, RunStatus


class Phase(StrEnum):
    """Which way a run moves through a stage: forward (its steps) or undoing it."""

    FORWARD = "run"
    UNDO = "undo"


class Where(NamedTuple):
    """Where a ``run_<i>``/``undo_<i>`` state is: its phase and its stage's index."""

    phase: Phase
    stage: int


class MoveKind(StrEnum):
    """The moves of a compiled machine (its events)."""

    DONE = "done"  # the stage's steps are done: on to the next stage, or completed
    FAIL = "fail"  # a step failed for good: undo the stage
    CANCEL = "cancel"  # a cancellation: undo the stage
    UNDONE = "undone"  # the stage is undone: undo the one before
    STUCK = "stuck"  # a compensation failed for good
    FINISH_COMPENSATED = "finish_compensated"
    FINISH_FAILED = "finish_failed"
    FINISH_CANCELLED = "finish_cancelled"
    GOTO = "goto"  # jump ahead to a later stage (``stage``): on_timeout, a catch's goto
    RESUME = "resume"  # an operator's retry: undo again from stage ``stage``
    REVERT = "revert"  # a completed child saga compensates (its parent asks)


@dataclass(frozen=True, slots=True)
class Move:
    """One move of a run's machine; ``stage`` for the moves that name one."""

    kind: MoveKind
    stage: int | None = None
    # The machine's event name for this move (worked out once: moves are taken often).
    event: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = str.__str__(self.kind)
        object.__setattr__(self, "event", name if self.stage is None
                           else f"{name}_{self.stage}")


# The machine's end states are named as the run statuses they give a run.
TERMINAL = tuple(s.value for s in RunStatus if s in FINAL)
COMPENSATION_FAILED = RunStatus.COMPENSATION_FAILED.value
FINISH_EVENTS = {MoveKind.FINISH_COMPENSATED.value: RunStatus.COMPENSATED.value,
                 MoveKind.FINISH_FAILED.value: RunStatus.FAILED.value,
                 MoveKind.FINISH_CANCELLED.value: RunStatus.CANCELLED.value}


@dataclass(frozen=True, eq=False)
class CompiledSaga:
    """A saga with its stages, its state machine class and the exported move table."""

    saga: Saga
    stages: tuple[tuple[str, ...], ...]
    stage_of: dict[str, int]
    machine_class: type[Any]
    transitions: dict[tuple[str, str], str]
    labels: dict[str, str]
    initial: str
    # Looked up on every step, so kept as tables: each step by name, and where each
    # ``run_<i>``/``undo_<i>`` state is; end states are absent.
    steps: dict[str, Step]
    where: dict[str, Where]
    # Per stage: whether its steps use none of the constructs (``if``, ``catch``,
    # ``for_each``, child sagas), so the planner takes its plain path.
    plain: tuple[bool, ...] = ()
    # Fan-out steps and child saga steps, by name.
    fan_outs: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()
    # Actions a run's creating commit may mark started (no condition, no list to expand).
    plain_actions: frozenset[str] = frozenset()

    def move(self, state: str, move: Move | str) -> str:
        """The state ``move`` (or the machine event of that name) leads to from
        ``state``; raise if the machine forbids it."""
        event = move if isinstance(move, str) else move.event
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise IllegalTransitionError(self.saga.name, state, event) from None

    def forward_stage(self, state: str) -> int | None:
        """The stage a run in ``state`` is moving forward through (None: it is undoing a
        stage, or has ended)."""
        where = self.where.get(state)
        return where.stage if where is not None and where.phase == Phase.FORWARD else None

    def states(self) -> list[str]:
        return [s.id for s in self.machine_class.states]


def run_state(stage: int) -> str:
    return f"run_{stage}"


def undo_state(stage: int) -> str:
    return f"undo_{stage}"




def predecessors(saga: Saga) -> dict[str, tuple[str, ...]]:
    """Each step's predecessors, in step order: its ``depends_on``, else the step before
    it (none for the first)."""
    names = [s.name for s in saga.steps]
    return {step.name: step.depends_on if step.depends_on is not None else (
                (names[i - 1],) if i else ())
            for i, step in enumerate(saga.steps)}


def stages_of(saga: Saga) -> tuple[tuple[str, ...], ...]:
    """Group steps into stages by dependency depth (list order within a stage)."""
    names = [s.name for s in saga.steps]
    before = predecessors(saga)
    # The catalog has rejected unknown names and cycles; dependencies on later steps are
    # resolved by iterating until stable.
    depth: dict[str, int] = {name: 0 if not deps else -1 for name, deps in before.items()}
    changed = True
    while changed:
        changed = False
        for name, deps in before.items():
            if deps and all(depth[d] >= 0 for d in deps):
                d = 1 + max(depth[x] for x in deps)
                if depth[name] != d:
                    depth[name] = d
                    changed = True
    count = max(depth.values()) + 1
    return tuple(tuple(n for n in names if depth[n] == k) for k in range(count))


def is_plain(step: Step) -> bool:
    """Whether a step uses none of the constructs that need the planner's general path."""
    if step.if_ is not None or isinstance(step, SagaStep):
        return False
    return not (isinstance(step, ActionStep) and (step.catch or step.for_each is not None))


def jump_targets(step: Step) -> list[str]:
    """The later steps a step may jump to: an await's ``on_timeout``, catch ``goto``s."""
    if isinstance(step, AwaitStep) and step.on_timeout != "compensate":
        return [step.on_timeout]
    if isinstance(step, ActionStep | SagaStep):
        return [c.goto for c in step.catch if c.goto != "continue"]
    return []


def _marked(step: Step) -> str:
    """A step's name in a stage label, marked by the constructs it uses."""
    name = step.name + ("?" if step.if_ is not None else "")
    if isinstance(step, ActionStep):
        name += "[*]" if step.for_each is not None else ""
        name += "!" if step.catch else ""
    elif isinstance(step, SagaStep):
        name += f" => {step.saga}" + ("!" if step.catch else "")
    return name


def _compile(saga: Saga) -> CompiledSaga:
    stages = stages_of(saga)
    n = len(stages)
    stage_of = {name: i for i, stage in enumerate(stages) for name in stage}
    states: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for i, stage in enumerate(stages):
        on: dict[str, list[dict[str, str]]] = {
            MoveKind.DONE.value: [{"target": run_state(i + 1) if i + 1 < n
                                   else RunStatus.COMPLETED.value}],
            MoveKind.FAIL.value: [{"target": undo_state(i)}],
            MoveKind.CANCEL.value: [{"target": undo_state(i)}],
        }
        for name in stage:
            for goto in jump_targets(saga.step(name)):
                # Validation refuses jumps that are not ahead; a definition that slipped
                # through (an outline never runs) gets no backward edge.
                target = stage_of.get(goto, -1)
                if target > i:
                    on[Move(MoveKind.GOTO, target).event] = [{"target": run_state(target)}]
        states[run_state(i)] = {"on": on, **({"initial": True} if i == 0 else {})}
        undo_on: dict[str, list[dict[str, str]]] = {
            MoveKind.STUCK.value: [{"target": COMPENSATION_FAILED}]}
        if i > 0:
            undo_on[MoveKind.UNDONE.value] = [{"target": undo_state(i - 1)}]
        else:
            undo_on.update({ev: [{"target": end}] for ev, end in FINISH_EVENTS.items()})
        states[undo_state(i)] = {"on": undo_on}
        labels[run_state(i)] = " + ".join(_marked(saga.step(s)) for s in stage)
        labels[undo_state(i)] = "undo " + " + ".join(reversed(stage))
    states[COMPENSATION_FAILED] = {
        "on": {Move(MoveKind.RESUME, i).event: [{"target": undo_state(i)}] for i in range(n)}}
    for end in TERMINAL:
        states[end] = {"final": True}
    # A completed run is undone when its parent compensates (it is a child saga then):
    # so `completed` is left by `revert` into the last undo state.
    states[RunStatus.COMPLETED.value] = {
        "on": {MoveKind.REVERT.value: [{"target": undo_state(n - 1)}]}}
    cls_name = "".join(p.title() for p in saga.name.split("_")) + f"V{saga.version}Machine"
    machine_class = create_machine_class_from_definition(
        cls_name, states=states, allow_event_without_transition=False,
        catch_errors_as_events=False)
    table: dict[tuple[str, str], str] = {}
    for state in machine_class.states:
        for transition in state.transitions:
            for event in transition.events:
                table[(transition.source.id, str(event))] = transition.target.id
    where = {**{run_state(i): Where(Phase.FORWARD, i) for i in range(n)},
             **{undo_state(i): Where(Phase.UNDO, i) for i in range(n)}}
    actions = [s for s in saga.steps if isinstance(s, ActionStep)]
    return CompiledSaga(saga=saga, stages=stages, stage_of=stage_of,
                        machine_class=machine_class, transitions=table, labels=labels,
                        initial=run_state(0), steps={s.name: s for s in saga.steps},
                        where=where,
                        plain=tuple(all(is_plain(saga.step(s)) for s in st) for st in stages),
                        fan_outs=frozenset(s.name for s in actions if s.for_each is not None),
                        children=frozenset(s.name for s in saga.steps
                                           if isinstance(s, SagaStep)),
                        plain_actions=frozenset(s.name for s in actions if s.if_ is None
                                                and s.for_each is None))


# Compiled sagas by (name, version, fingerprint): the same definition loaded again (a
# catalog reloaded, a second engine) compiles once; the least recently used are dropped
# past CACHE_SIZE, so a process that loads many definitions over time stays bounded.
CACHE_SIZE = 256
_cache: OrderedDict[tuple[str, int, str], CompiledSaga] = OrderedDict()
_cache_lock = threading.Lock()


def compile_saga(saga: Saga) -> CompiledSaga:
    """The compiled form of ``saga`` (built once per definition, then cached)."""
    key = (saga.name, saga.version, fingerprint(saga))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    compiled = _compile(saga)
    with _cache_lock:
        compiled = _cache.setdefault(key, compiled)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled
