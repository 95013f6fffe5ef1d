"""The handler registry: binds the step names used in YAML to Python callables.

Handlers are bound only here, by the service that embeds the engine; a name found in YAML
is looked up in this table and never imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from concordia.errors import ConcordiaError, PermanentError

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Binding:
    """A registered handler and what the engine needs to know to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool


class DuplicateHandlerError(ConcordiaError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} handler {name!r} is already registered")


class Registry:
    """Actions and compensations by name.

    >>> registry = Registry()
    >>> @registry.action("billing.charge")
    ... def charge(ctx): return {"charge_id": "ch_1"}
    """

    def __init__(self) -> None:
        self._actions: dict[str, Binding] = {}
        self._compensations: dict[str, Binding] = {}

    def action(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` as the action handler ``name``."""
        return self._register(self._actions, "action", name)

    def compensation(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` as the compensation handler ``name``."""
        return self._register(self._compensations, "compensation", name)

    def add_action(self, name: str, fn: Callable[..., Any]) -> None:
        self._register(self._actions, "action", name)(fn)

    def add_compensation(self, name: str, fn: Callable[..., Any]) -> None:
        self._register(self._compensations, "compensation", name)(fn)

    def _register(self, table: dict[str, Binding], kind: str,
                  name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in table:
                raise DuplicateHandlerError(kind, name)
            table[name] = Binding(name, fn, inspect.iscoroutinefunction(fn))
            return fn

        return decorator

    def get_action(self, name: str) -> Binding:
        return self._actions.get(name) or _unbound("action", name)

    def get_compensation(self, name: str) -> Binding:
        return self._compensations.get(name) or _unbound("compensation", name)

    def action_names(self) -> list[str]:
        return sorted(self._actions)

    def compensation_names(self) -> list[str]:
        return sorted(self._compensations)

    def merge(self, other: Registry) -> None:
        """Add every binding of ``other`` (for services built from several modules)."""
        for name, b in other._actions.items():
            self.add_action(name, b.fn)
        for name, b in other._compensations.items():
            self.add_compensation(name, b.fn)


def _unbound(kind: str, name: str) -> Binding:
    """A binding that fails for good: reached only by a run on a definition version whose
    handlers this service no longer registers (the engine checks the current ones)."""

    def missing(ctx: Any) -> Any:
        raise PermanentError(f"no {kind} handler {name!r} is registered in this service")

    return Binding(name, missing, False)


def load_registry(module_name: str) -> Registry:
    """The ``registry`` object of an importable module named on the command line.

    This imports a module the *operator* names (``--handlers``), never a name from YAML.
    """
    import importlib
    import os
    import sys

    # Like uvicorn's --app-dir default: modules of the project the command runs in import.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:  # a broken module must not end the CLI in a traceback
        raise ConcordiaError(f"importing handlers module {module_name!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    registry = getattr(module, "registry", None)
    if not isinstance(registry, Registry):
        raise ConcordiaError(
            f"module {module_name!r} has no `registry` (a concordia.Registry instance)")
    return registry
