"""The oracle: at each choice point, the option this path takes.

Two ways of naming a path:

- :class:`Oracle` follows a *prefix* of option indexes (a depth-first search extends it,
  as stateless model checkers do), then takes the first option that fits the fault
  budget; it records how many options each point had, so the search knows what is left.
- :class:`Script` follows choices given by point (kind, key and occurrence), and takes the
  happy option anywhere else: how a path is replayed with one of its faults dropped, on
  another version of its saga, or on the real engine.

A point met for the first time past the prefix may be a state met before (the caller's
``seen`` check): the path then stops there, merged into the one that met it first
(:class:`PathMerged`, a ``BaseException`` so that no handler of the engine's own mistakes
it for a failure of the run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from concordia.explore.model import Choice, Option, Point, PointKind


class PathMerged(BaseException):
    """The path reached a state an earlier path explored from: it stops here."""

    def __init__(self, into: int) -> None:
        super().__init__(into)
        self.into = into


class Chooser(ABC):
    """What the world asks: an option for a point, among ``options`` (happy first);
    subclasses say which of the fitting options to take (:meth:`_pick`)."""

    def __init__(self, faults: int) -> None:
        self.budget = faults
        self.used = 0
        self.choices: list[Choice] = []
        self._occurrences: dict[tuple[PointKind, str], int] = {}
        self.states = 0

    def choose(self, point: Point, options: Sequence[Option]) -> Option:
        occurrence = self._occurrences.get((point.kind, point.key), 0)
        self._occurrences[(point.kind, point.key)] = occurrence + 1
        fitting = options if self.used < self.budget else [o for o in options if not o.fault]
        pick = self._pick(point, occurrence, fitting) if len(fitting) > 1 else 0
        option = fitting[pick]
        if option.fault:
            self.used += 1
        self.choices.append(Choice(point, option))
        return option

    @abstractmethod
    def _pick(self, point: Point, occurrence: int, fitting: Sequence[Option]) -> int: ...


class Oracle(Chooser):
    """Follows ``prefix``, then the first fitting option (see the module docstring).

    ``seen`` is asked at each point past the prefix: it returns the number of the path
    that met this state first, or None (then the state is this path's from now on).
    """

    def __init__(self, prefix: Sequence[int], faults: int,
                 seen: Callable[[Point], int | None] | None = None) -> None:
        super().__init__(faults)
        self.prefix = list(prefix)
        self.trace: list[tuple[int, int]] = []  # (option taken, options there)
        self.seen = seen

    def _pick(self, point: Point, occurrence: int, fitting: Sequence[Option]) -> int:
        depth = len(self.trace)
        if depth >= len(self.prefix):
            self.states += 1
            if self.seen is not None:
                into = self.seen(point)
                if into is not None:
                    raise PathMerged(into)
        pick = self.prefix[depth] if depth < len(self.prefix) else 0
        self.trace.append((pick, len(fitting)))
        return pick


def next_prefix(trace: Sequence[tuple[int, int]]) -> list[int] | None:
    """The prefix of the next path in depth-first order, or None when every option of
    every point has been taken."""
    for depth in range(len(trace) - 1, -1, -1):
        pick, count = trace[depth]
        if pick + 1 < count:
            return [p for p, _ in trace[:depth]] + [pick + 1]
    return None


ScriptKey = tuple[PointKind, str, int]


class Script(Chooser):
    """Takes the option labelled in ``script`` at each point it names (by kind, key and
    occurrence), the happy one elsewhere; ``budget`` is not enforced against it."""

    def __init__(self, script: dict[ScriptKey, str]) -> None:
        super().__init__(faults=len(script) + 1_000_000)
        self.script = script
        self.missed: set[ScriptKey] = set(script)

    @classmethod
    def of(cls, choices: Sequence[Choice]) -> Script:
        """The script that replays ``choices`` (the points each was made at, counted)."""
        counted: dict[tuple[PointKind, str], int] = {}
        script: dict[ScriptKey, str] = {}
        for choice in choices:
            point = choice.point
            n = counted.get((point.kind, point.key), 0)
            counted[(point.kind, point.key)] = n + 1
            script[(point.kind, point.key, n)] = choice.option.label
        return cls(script)

    def _pick(self, point: Point, occurrence: int, fitting: Sequence[Option]) -> int:
        wanted = self.script.get((point.kind, point.key, occurrence))
        if wanted is None:
            return 0
        for i, option in enumerate(fitting):
            if option.label == wanted:
                self.missed.discard((point.kind, point.key, occurrence))
                return i
        return 0
