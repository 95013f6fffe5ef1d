"""The interface every kind of step offers the pass loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from concordia.runtime.decision import Decision, DecisionKind
from concordia.runtime.effects import Flow
from concordia.runtime.invoke import HandlerStopError
from concordia.runtime.run_pass import RunPass

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
