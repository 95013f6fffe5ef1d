"""The catalog: a whole definition tree loaded, validated file by file, then as a whole.

Loading reads every ``.yaml``/``.yml`` file under the paths given (never a FIFO or a
device), parses each on its own (:mod:`~concordia.definitions.documents`), keeps the
definitions without problems in name/version tables, and hands the whole tree to the
cross-file checks (:mod:`~concordia.definitions.checks`). Every problem is reported in
one pass; nothing stops at the first.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from concordia.definitions.checks import HandlerNames, TreeChecks
from concordia.definitions.documents import ParsedFile, parse_file
from concordia.definitions.models import ActionStep, EventDef, Policy, Saga
from concordia.definitions.outline import PolicyOutline, SagaOutline
from concordia.definitions.problems import Problem, Severity, pointer_join
from concordia.errors import DefinitionError

T = TypeVar("T")
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Catalog:
    """Every saga, event and policy of a tree, plus every problem found in it."""

    sagas: dict[tuple[str, int], Saga] = field(default_factory=dict)
    events: dict[tuple[str, int], EventDef] = field(default_factory=dict)
    policies: dict[tuple[str, int], Policy] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, ParsedFile] = field(default_factory=dict)
    # Every saga and policy as far as it could be built, with or without problems: what
    # the cross-file checks look at.
    outlines: list[SagaOutline] = field(default_factory=list, repr=False)
    policy_outlines: list[PolicyOutline] = field(default_factory=list, repr=False)
    # Names of definitions left out for problems of their own, by kind.
    _broken: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)
    # Name -> versions for each kind, kept by _add_unique (the only writer of the tables):
    # the checks look a name up for every emit and step, and scanning every key of a
    # table for each lookup made validating a large tree quadratic.
    _versions: dict[str, dict[str, list[int]]] = field(
        default_factory=dict, repr=False, compare=False)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, paths: Sequence[str], handlers: HandlerNames | None = None) -> Catalog:
        """Load files and directories (recursively); never raises for bad definitions."""
        catalog = cls()
        files: list[str] = []
        for path in paths:
            if os.path.isdir(path):
                found = sorted(_yaml_files(path))
                if not found:
                    catalog.problems.append(Problem(
                        "no-definitions", "directory holds no .yaml or .yml files", path))
                files.extend(found)
            elif os.path.exists(path):
                files.append(path)
            else:
                catalog.problems.append(Problem("not-found", "no such file or directory", path))
        # One file named twice (`definitions` and `./definitions`, or a directory and a
        # file in it) is read once, under the first spelling, rather than reported as a
        # duplicate of itself.
        unique: dict[str, str] = {}
        for path in files:
            unique.setdefault(os.path.realpath(path), path)
        with _gc_paused():
            for path in unique.values():
                catalog._add(parse_file(path))
            catalog._check(handlers)
        catalog.problems.sort(key=Problem.sort_key)
        return catalog

    @classmethod
    def load_strict(cls, paths: Sequence[str], handlers: HandlerNames | None = None) -> Catalog:
        """Like :meth:`load`, but raise :class:`DefinitionError` if any error was found."""
        catalog = cls.load(paths, handlers)
        if catalog.errors:
            raise DefinitionError(catalog.errors)
        return catalog

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def _add(self, parsed: ParsedFile) -> None:
        self.files[parsed.path] = parsed
        self.problems.extend(parsed.problems)
        for saga in parsed.sagas:
            self._add_unique(self.sagas, saga.key, saga, parsed, "", "saga")
        for event, pointer in parsed.events:
            self._add_unique(self.events, (event.name, event.version), event, parsed,
                             pointer, "event")
        for policy in parsed.policies:
            self._add_unique(self.policies, (policy.name, policy.version), policy, parsed, "",
                             "policy")
        self.outlines.extend(parsed.outlines)
        self.policy_outlines.extend(parsed.policy_outlines)
        for kind, name in parsed.broken_names:
            self._broken.setdefault(kind, set()).add(name)

    def _add_unique(self, table: dict[tuple[str, int], T], key: tuple[str, int],
                    value: T, parsed: ParsedFile, pointer: str, what: str) -> None:
        if key in table:
            other = getattr(table[key], "source", None) or getattr(table[key], "file", "")
            self.add_problem(parsed.path, "duplicate-name",
                             f"{what} {key[0]!r} version {key[1]} is already defined in {other}",
                             pointer_join(pointer, "name"))
            return
        table[key] = value
        self._versions.setdefault(what, {}).setdefault(key[0], []).append(key[1])

    # -- lookups ---------------------------------------------------------------------------

    def saga(self, name: str, version: int | None = None) -> Saga:
        return self.sagas[self._key("saga", name, version)]

    def event(self, name: str, version: int | None = None) -> EventDef:
        return self.events[self._key("event", name, version)]

    def policy(self, name: str, version: int | None = None) -> Policy:
        return self.policies[self._key("policy", name, version)]

    def has_saga(self, name: str, version: int | None = None) -> bool:
        return self._known("saga", self.sagas, name, version)

    def has_event(self, name: str, version: int | None = None) -> bool:
        return self._known("event", self.events, name, version)

    def has_policy(self, name: str, version: int | None = None) -> bool:
        return self._known("policy", self.policies, name, version)

    def is_broken(self, kind: str, name: str) -> bool:
        """Whether a ``kind`` definition named ``name`` was left out for its own problems."""
        return name in self._broken.get(kind, ())

    def event_names(self) -> set[str]:
        return set(self._versions.get("event", {}))

    def policy_names(self) -> set[str]:
        return set(self._versions.get("policy", {}))

    def _key(self, what: str, name: str, version: int | None) -> tuple[str, int]:
        """The key of ``version`` of ``name``, or of its latest version."""
        if version is not None:
            return (name, version)
        versions = self._versions.get(what, {}).get(name)
        if not versions:
            raise KeyError(name)
        return (name, max(versions))

    def _known(self, what: str, table: Mapping[tuple[str, int], object], name: str,
               version: int | None) -> bool:
        if version is not None:
            return (name, version) in table
        return name in self._versions.get(what, {})

    # -- whole-tree checks -----------------------------------------------------------------

    def add_problem(self, path: str, code: str, message: str, pointer: str = "",
                    hint: str | None = None, severity: Severity = "error") -> None:
        """Record a problem of the file at ``path``, located by ``pointer``."""
        parsed = self.files.get(path)
        line, col = parsed.document.locate(pointer) if parsed and parsed.document else (0, 0)
        self.problems.append(Problem(code, message, path, line, col, pointer, hint=hint,
                                     severity=severity))

    def _check(self, handlers: HandlerNames | None) -> None:
        if self.files and not (self.sagas or self.events or self.policies) and not self.problems:
            self.problems.append(Problem("no-definitions", "no definitions found",
                                         next(iter(self.files))))
        TreeChecks(self).run(handlers)

    def handler_uses(self) -> Iterator[tuple[str, str, Saga, int]]:
        """Every handler name the sagas use: (``action``|``compensation``, name, saga,
        step index)."""
        for saga in self.sagas.values():
            for i, step in enumerate(saga.steps):
                if isinstance(step, ActionStep):
                    for kind, name in step.handlers():
                        yield kind, name, saga, i


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a tree loads.

    Loading allocates hundreds of thousands of small containers (YAML nodes, dicts, marks)
    that reference counting alone frees. With the collector on, every few hundred
    allocations start a pass, and the older generations re-scan the growing catalog:
    about 40% of the time of loading a 1,200-file tree. Any cycle made meanwhile is
    collected once the collector resumes.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _yaml_files(root: str) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                yield os.path.join(dirpath, name)
