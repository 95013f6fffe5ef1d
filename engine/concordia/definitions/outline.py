"""What can still be checked of a definition that has problems of its own.

A saga whose third step is malformed still has four good steps whose expressions and
references deserve checking in the same pass. The file's schema errors are mapped to
*regions* (a step, a rule, one event of a domain file, a top-level key); the models are
built from what lies outside the broken regions, and the catalog checks those, while the
broken regions' own problems are what the author sees for them. A broken step is itself
checked as far as it is sound: its keys that the schema did not refuse make a *partial*
step, so a bad ``retry`` does not hide the step's missing compensation, unknown event or
faulty expression until the next run of ``validate``. An outline is never run: only a
definition without problems becomes a :class:`~concordia.definitions.models.Saga` or
:class:`~concordia.definitions.models.Policy` in the catalog's tables.
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
    # The step as far as it is sound (all of it, when ``partial`` is false); None when not
    # even its name and kind are.
    step: Step | None
    partial: bool = False


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
        # Within a broken item of a list: the keys the schema refused, and the items that
        # are wrong as a whole (not a mapping, no kind, two kinds).
        self._spoiled: dict[str, set[str]] = {}
        self._whole: set[str] = set()

    def add(self, pointer: str) -> None:
        self._broken.add(pointer)

    def spoiled_keys(self, pointer: str) -> set[str] | None:
        """The keys of the list item at ``pointer`` that the schema refused (empty when
        none did); None when the item is wrong as a whole."""
        if pointer in self._whole or not self.ok(pointer.rsplit("/", 1)[0]):
            return None
        return self._spoiled.get(pointer, set())

    def _spoil(self, item: str, err: ValidationError, path: list[str | int]) -> None:
        if len(path) >= 3:
            self._spoiled.setdefault(item, set()).add(str(path[2]))
        elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
            self._spoiled.setdefault(item, set()).update(
                str(k) for k in err.instance if k not in allowed)
        elif err.validator != "required":  # a missing key spoils nothing that is there
            self._whole.add(item)

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
            item = pointer_join("", str(path[0]), path[1])
            self._broken.add(item)
            self._spoil(item, err, path)
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
