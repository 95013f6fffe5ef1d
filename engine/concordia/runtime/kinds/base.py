"""The interface every kind of step offers the pass loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from concordia.definitions.models import Step
from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.journaling import Journaling
from concordia.runtime.run_pass import RunPass
from concordia.store.records import StepRecord

S = TypeVar("S", bound=Step)

# What carrying a decision out returns: a handler's request to stop the worker, if any.
Stop = HandlerStopError | None
Carry = Callable[[RunPass, Decision, float], Flow[Stop]]


class StepKind(Protocol):
    """One kind of step (or construct): the decisions it carries out."""

    def carries(self) -> Mapping[DecisionKind, Carry]: ...


class StartsSteps(StepKind, Protocol):
    """A kind whose steps a ``start`` decision names (actions, awaits, policy checks)."""

    # Whether its steps start together, after the other kinds' (handlers called at once,
    # their start durable first); else each step starts on its own, in stage order.
    batched: bool

    def start(self, p: RunPass, names: Sequence[str], now: float) -> Flow[Stop]: ...


class OnJournal:
    """What every kind holds: the shared services (``j``); it carries out no decision of
    its own unless it says so (:meth:`carries`)."""

    def __init__(self, journaling: Journaling) -> None:
        self.j = journaling

    def carries(self) -> Mapping[DecisionKind, Carry]:
        return {}


def steps_of(p: RunPass, names: Sequence[str], kind: type[S]) -> list[tuple[S, StepRecord]]:
    """The steps ``names`` of the run (each of type ``kind``), with their records."""
    # The executor hands each kind only steps of its type (see Executor.starters).
    steps = p.compiled.steps
    return [(steps[name], p.steps[name]) for name in names]  # type: ignore[misc]
