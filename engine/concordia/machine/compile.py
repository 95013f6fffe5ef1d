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

from dataclasses import dataclass
from typing import Any

from statemachine.io import create_machine_class_from_definition

from concordia.definitions.models import ActionStep, AwaitStep, Saga, SagaStep, Step
from concordia.errors import IllegalTransitionError
from concordia.status import FINAL, RunStatus

# The machine's end states are named as the run statuses they give a run.
TERMINAL = tuple(s.value for s in RunStatus if s in FINAL)
COMPENSATION_FAILED = RunStatus.COMPENSATION_FAILED.value
FINISH_EVENTS = {"finish_compensated": RunStatus.COMPENSATED.value,
                 "finish_failed": RunStatus.FAILED.value,
                 "finish_cancelled": RunStatus.CANCELLED.value}


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
    # Looked up on every step, so kept as tables: each step by name, and each
    # ``run_<i>``/``undo_<i>`` state as (``"run"``|``"undo"``, i); end states are absent.
    steps: dict[str, Step]
    where: dict[str, tuple[str, int]]
    # Per stage: whether its steps use none of the constructs (``if``, ``catch``,
    # ``for_each``, child sagas), so the planner takes its plain path.
    plain: tuple[bool, ...] = ()
    # Fan-out steps and child saga steps, by name.
    fan_outs: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()
    # Actions a run's creating commit may mark started (no condition, no list to expand).
    plain_actions: frozenset[str] = frozenset()

    def move(self, state: str, event: str) -> str:
        """The state ``event`` leads to from ``state``; raise if the machine forbids it."""
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise IllegalTransitionError(self.saga.name, state, event) from None

    def stage_of_state(self, state: str) -> int:
        """The stage index of a ``run_<i>``/``undo_<i>`` state."""
        return self.where[state][1]

    def states(self) -> list[str]:
        return [s.id for s in self.machine_class.states]


def run_state(stage: int) -> str:
    return f"run_{stage}"


def undo_state(stage: int) -> str:
    return f"undo_{stage}"


def parse_state(state: str) -> tuple[str, int]:
    """(``run``|``undo``|end name, stage index or -1)."""
    if state.startswith(("run_", "undo_")):
        kind, _, idx = state.partition("_")
        return kind, int(idx)
    return state, -1


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
            "done": [{"target": run_state(i + 1) if i + 1 < n else RunStatus.COMPLETED.value}],
            "fail": [{"target": undo_state(i)}],
            "cancel": [{"target": undo_state(i)}],
        }
        for name in stage:
            for goto in jump_targets(saga.step(name)):
                # Validation refuses jumps that are not ahead; a definition that slipped
                # through (an outline never runs) gets no backward edge.
                target = stage_of.get(goto, -1)
                if target > i:
                    on[f"goto_{target}"] = [{"target": run_state(target)}]
        states[run_state(i)] = {"on": on, **({"initial": True} if i == 0 else {})}
        undo_on: dict[str, list[dict[str, str]]] = {"stuck": [{"target": COMPENSATION_FAILED}]}
        if i > 0:
            undo_on["undone"] = [{"target": undo_state(i - 1)}]
        else:
            undo_on.update({ev: [{"target": end}] for ev, end in FINISH_EVENTS.items()})
        states[undo_state(i)] = {"on": undo_on}
        labels[run_state(i)] = " + ".join(_marked(saga.step(s)) for s in stage)
        labels[undo_state(i)] = "undo " + " + ".join(reversed(stage))
    states[COMPENSATION_FAILED] = {
        "on": {f"resume_{i}": [{"target": undo_state(i)}] for i in range(n)}}
    for end in TERMINAL:
        states[end] = {"final": True}
    # A completed run is undone when its parent compensates (it is a child saga then):
    # so `completed` is left by `revert` into the last undo state.
    states[RunStatus.COMPLETED.value] = {"on": {"revert": [{"target": undo_state(n - 1)}]}}
    cls_name = "".join(p.title() for p in saga.name.split("_")) + f"V{saga.version}Machine"
    machine_class = create_machine_class_from_definition(
        cls_name, states=states, allow_event_without_transition=False,
        catch_errors_as_events=False)
    table: dict[tuple[str, str], str] = {}
    for state in machine_class.states:
        for transition in state.transitions:
            for event in transition.events:
                table[(transition.source.id, str(event))] = transition.target.id
    where = {**{run_state(i): ("run", i) for i in range(n)},
             **{undo_state(i): ("undo", i) for i in range(n)}}
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


# Keyed by object identity (pydantic models holding dicts are not hashable); the saga is
# kept in the value so its id cannot be reused while the entry lives.
_CACHE: dict[int, tuple[Saga, CompiledSaga]] = {}


def compile_saga(saga: Saga) -> CompiledSaga:
    """The compiled form of ``saga`` (built once per definition version, then cached)."""
    hit = _CACHE.get(id(saga))
    if hit is None:
        hit = _CACHE[id(saga)] = (saga, _compile(saga))
    return hit[1]
