"""What the explorer finds, as data: choice points and their options, the calls a path
makes, the effects it leaves, the properties it breaks, and a whole exploration.

A *path* is the list of choices made at the places where the world decides (a handler's
outcome, an await's event or timeout, a condition, a list's length, a crash mid-attempt).
Everything else on it is the engine's doing, so the choices name the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PointKind(StrEnum):
    """Where the world decides."""

    ACTION = "action"  # an attempt of an action (or of one item of a fan-out)
    COMPENSATION = "compensation"  # an attempt of a compensation
    AWAIT = "await"  # an event arrives, or the deadline passes
    CHILD = "child"  # how a child saga ends
    CONDITION = "if"  # a condition's value
    ITEMS = "items"  # a fan-out's list length
    POLICY = "policy"  # a policy's decision
    WAIT = "wait"  # a retry timer runs (a cancel may come meanwhile)


class Act(StrEnum):
    """What an option does."""

    OK = "ok"
    FAIL = "fail"
    CRASH = "crash"
    CANCEL = "cancel"
    EVENT = "event"
    TIMEOUT = "timeout"
    NEVER = "never"
    COMPLETE = "complete"
    COMPENSATE = "compensate"
    FAIL_CHILD = "fail_child"
    TRUE = "true"
    FALSE = "false"
    ITEMS = "items"
    APPROVE = "approve"
    REJECT = "reject"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Point:
    """One place where the world decides: its kind and what it concerns (``key``: the step,
    the item and the attempt, as ``sync[2]#1``)."""

    kind: PointKind
    step: str
    key: str
    index: int | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Option:
    """One thing the world may do at a point. A *fault* is any outcome but the happy one
    (conditions and list lengths are branches, never faults)."""

    act: Act
    label: str
    fault: bool = False
    error: str | None = None  # the error's name, for failures
    after: bool = False  # the effect landed before the failure
    sticky: bool = False  # every later attempt fails the same way
    count: int = 0  # a list's length


@dataclass(frozen=True, slots=True)
class Choice:
    point: Point
    option: Option

    def describe(self) -> str:
        return f"{self.point.key}: {self.option.label}"


@dataclass(frozen=True, slots=True)
class Call:
    """One handler call on a path: an action or a compensation, its step (and item), its
    attempt, and what the world made of it."""

    phase: str  # "action" | "compensation"
    step: str
    index: int | None
    attempt: int
    outcome: str
    undoing: bool = False  # a compensation made while the run undid its stages
    batch: int = 0  # the calls the engine made together (a stage's, a fan-out's) share one

    @property
    def name(self) -> str:
        return self.step if self.index is None else f"{self.step}[{self.index}]"

    def describe(self) -> str:
        what = "undo " if self.phase == "compensation" else ""
        return f"{what}{self.name}#{self.attempt} {self.outcome}"


@dataclass(frozen=True, slots=True)
class Effect:
    """An effect that landed on a path (a step's or an item's), in landing order."""

    step: str
    index: int | None
    how: str  # "succeeded" | "failed after its effect" | "the worker died"

    @property
    def name(self) -> str:
        return self.step if self.index is None else f"{self.step}[{self.index}]"


class LeftoverKind(StrEnum):
    """Why an effect is still in place at the end of a path."""

    DECLARED = "declared"  # `compensate: none` with a reason: accepted
    HALTED = "halted"  # the run ended compensation_failed: visible, resumable
    UNRECORDED = "unrecorded"  # the effect landed and the journal never learned of it
    UNCOMPENSATED = "uncompensated"  # known to the journal, and nobody undid it


ACCEPTED = frozenset({LeftoverKind.DECLARED, LeftoverKind.HALTED})


@dataclass(frozen=True, slots=True)
class Leftover:
    step: str
    index: int | None
    kind: LeftoverKind
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.step if self.index is None else f"{self.step}[{self.index}]"

    @property
    def accepted(self) -> bool:
        return self.kind in ACCEPTED

    def describe(self) -> str:
        if self.kind == LeftoverKind.DECLARED:
            return f"{self.name} (reason: {self.reason})"
        if self.kind == LeftoverKind.HALTED:
            return f"{self.name} (until the run is retried)"
        if self.kind == LeftoverKind.UNRECORDED:
            return f"{self.name} (landed unrecorded)"
        return f"{self.name} (not compensated)"


class Property(StrEnum):
    """What ``prove`` checks on every path (see docs/explore.md)."""

    LEFTOVERS = "no-silent-leftovers"
    ORDER = "compensation-order"
    TERMINATION = "termination"
    DEADLINES = "await-deadlines"
    REFERENCES = "events-and-reads"


@dataclass(frozen=True, slots=True)
class Violation:
    """A property a path breaks: which, about what (``subject``, so that the same breach
    found on many paths is reported once), where (a step, for file:line) and what to do."""

    property: Property
    subject: str
    message: str
    hint: str
    step: str | None = None


class Ending(StrEnum):
    """How a path ends, besides the run statuses."""

    WAITS_FOREVER = "waits_forever"  # an await without a deadline whose event never comes
    NO_END = "does_not_end"  # the run stops with nothing to wake it, or never settles


@dataclass
class PathRecord:
    """One explored path."""

    number: int
    choices: tuple[Choice, ...]
    calls: tuple[Call, ...]
    status: str
    effects: tuple[Effect, ...]
    leftovers: tuple[Leftover, ...]
    duration: float  # worst case, in seconds (inf: unbounded)
    violations: tuple[Violation, ...] = ()
    merged_into: int | None = None  # joins this earlier path's state from there on
    error: str | None = None  # the run's error at its end
    states: int = 0  # choice points met on it

    @property
    def faults(self) -> tuple[Choice, ...]:
        return tuple(c for c in self.choices if c.option.fault)

    @property
    def compensations(self) -> list[str]:
        """The effects undone on this path, in the order they were undone."""
        return [c.name for c in self.calls if c.phase == "compensation" and c.outcome == "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.number,
            "faults": [c.describe() for c in self.faults],
            "choices": [{"kind": str(c.point.kind), "at": c.point.key,
                         "option": c.option.label, "fault": c.option.fault}
                        for c in self.choices],
            "calls": [c.describe() for c in self.calls],
            "status": self.status,
            "compensated": self.compensations,
            "left_in_place": [{"effect": lo.name, "kind": str(lo.kind), "reason": lo.reason}
                              for lo in self.leftovers],
            "worst_case_seconds": None if self.duration == float("inf") else self.duration,
            "violations": [{"property": str(v.property), "message": v.message}
                           for v in self.violations],
            "merged_into": self.merged_into,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Bounds:
    """How far the explorer looks: faults per path, a fan-out's list length, and a limit
    on the paths of one saga (a guard against a definition with very many)."""

    faults: int = 1
    items: int = 3
    max_paths: int = 100_000


@dataclass
class Exploration:
    """Every path of one saga within the bounds, and what they break."""

    saga: str
    version: int
    bounds: Bounds
    paths: list[PathRecord] = field(default_factory=list)
    states: int = 0  # distinct states met (journal fingerprints)
    counterexamples: list[tuple[Violation, PathRecord]] = field(default_factory=list)
    static: list[Violation] = field(default_factory=list)  # breaches of the definition itself
    truncated: bool = False  # max_paths reached

    @property
    def worst_duration(self) -> float:
        return max((p.duration for p in self.paths), default=0.0)

    @property
    def complete_paths(self) -> list[PathRecord]:
        return [p for p in self.paths if p.merged_into is None]
