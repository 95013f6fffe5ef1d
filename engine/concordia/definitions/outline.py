"""What can still be checked of a definition that has problems of its own.

A saga whose third step is malformed still has four good steps whose expressions and
references deserve checking in the same pass. The file's schema errors are mapped to
*regions* (a step, a rule, one event of a domain file, a top-level key); the models are
built from what lies outside the broken regions, and the catalog checks those, while the
broken regions' own problems are what the author sees for them. An outline is never run:
only a definition without problems becomes a :class:`~concordia.definitions.models.Saga`
or :class:`~concordia.definitions.models.Policy` in the catalog's tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jsonschema import ValidationError

from concordia.definitions.models import Emit, Policy, Rule, Saga, Step
from concordia.definitions.problems import pointer_join

# Top-level keys whose items are checked one by one (a broken item spoils only itself).
ITEMISED = frozenset({"steps", "rules", "events"})


@dataclass(frozen=True, slots=True)
class StepSlot:
    """One entry of a saga's ``steps`` as written, good or not.

    Broken steps keep their place: the steps after them still depend on them by order,
    and other steps may name them (``depends_on``, ``results.<name>``, ``on_timeout``).
    """

    index: int
    name: str | None  # as written, if it is a string
    depends_on: tuple[str, ...] | None  # as written, if a list of strings
    step: Step | None  # None: the step has problems of its own and is checked no further


@dataclass(frozen=True, slots=True)
class SagaOutline:
    """A saga as far as it could be built: every step's slot, the good steps' models."""

    saga: Saga
    slots: tuple[StepSlot, ...]
    emits_checked: frozenset[str]  # which of on_complete / on_failure are whole

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots if s.name is not None]

    def emit_lists(self) -> Iterable[tuple[str, Sequence[Emit]]]:
        for key in ("on_complete", "on_failure"):
            if key in self.emits_checked:
                yield key, getattr(self.saga, key)


@dataclass(frozen=True, slots=True)
class PolicyOutline:
    """A policy's good rules (with their index as written) and, if good, its default."""

    name: str
    source: str
    rules: tuple[tuple[int, Rule], ...]
    default_reason: str | None
    policy: Policy | None  # the whole policy, when the file had no problem


class Regions:
    """The parts of one document that schema errors (or later checks) have spoiled."""

    def __init__(self) -> None:
        self._broken: set[str] = set()

    def add(self, pointer: str) -> None:
        self._broken.add(pointer)

    def add_error(self, err: ValidationError) -> None:
        """Mark the region an error of the document's schema falls in."""
        path = list(err.absolute_path)
        if not path:
            if err.validator == "required" and isinstance(err.instance, dict):
                for key in err.validator_value:  # type: ignore[union-attr]
                    if key not in err.instance:
                        self._broken.add(pointer_join("", str(key)))
            elif err.validator != "additionalProperties":
                # The document as a whole is wrong (an unknown top-level key is not: it is
                # left out of what is built).
                self._broken.add("")
            return
        if len(path) >= 2 and path[0] in ITEMISED:
            self._broken.add(pointer_join("", str(path[0]), path[1]))
        else:
            self._broken.add(pointer_join("", str(path[0])))

    def ok(self, pointer: str) -> bool:
        """Whether nothing at ``pointer``, above it or (for a list key) in it is broken."""
        if pointer in self._broken or "" in self._broken:
            return False
        head = "/" + pointer.split("/")[1] if pointer else ""
        return head not in self._broken

    def __bool__(self) -> bool:
        return bool(self._broken)
