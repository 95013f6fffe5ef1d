"""Concordia: a declarative saga engine.

Sagas, the event taxonomy and policies are YAML validated against JSON Schema; one
interpreter compiles each saga into a state machine and runs it on a durable journal,
calling the handlers a service registers.
"""

from typing import TYPE_CHECKING, Any

from concordia.version import __version__

if TYPE_CHECKING:
    from concordia.clock import SystemClock, VirtualClock
    from concordia.definitions.catalog import Catalog
    from concordia.errors import (
        BindingError,
        ChildSagaError,
        ConcordiaError,
        DefinitionChangedError,
        DefinitionError,
        EventError,
        ExpressionError,
        HandlerError,
        PermanentError,
        PolicyError,
        RetryableError,
        StoreError,
        UnknownRunError,
        UnknownSagaError,
        ValueLimitError,
    )
    from concordia.events.bus import Bus, InMemoryBus
    from concordia.events.envelope import Envelope, new_event
    from concordia.events.nats import JetStreamSettings, NatsBus, NatsConsumer
    from concordia.logging import configure_logging
    from concordia.registry import Registry
    from concordia.runtime import (
        AsyncEngine,
        CompensationContext,
        Delivery,
        Engine,
        InputError,
        ItemCompensationContext,
        ItemContext,
        RunView,
        StepContext,
    )
    from concordia.store import open_store

# Public names and the module each lives in. They are imported on first use (PEP 562),
# so `concordia validate` does not pay for the runtime, structlog or the CEL library.
_EXPORTS = {
    "SystemClock": "concordia.clock", "VirtualClock": "concordia.clock",
    "Catalog": "concordia.definitions.catalog",
    "BindingError": "concordia.errors", "ChildSagaError": "concordia.errors",
    "ConcordiaError": "concordia.errors",
    "DefinitionChangedError": "concordia.errors",
    "DefinitionError": "concordia.errors", "EventError": "concordia.errors",
    "ExpressionError": "concordia.errors", "HandlerError": "concordia.errors",
    "PermanentError": "concordia.errors",
    "PolicyError": "concordia.errors", "RetryableError": "concordia.errors",
    "StoreError": "concordia.errors", "UnknownRunError": "concordia.errors",
    "UnknownSagaError": "concordia.errors", "ValueLimitError": "concordia.errors",
    "Bus": "concordia.events.bus", "InMemoryBus": "concordia.events.bus",
    "Envelope": "concordia.events.envelope", "new_event": "concordia.events.envelope",
    # The NATS names need the `nats` extra; they import nats-py only when used.
    "JetStreamSettings": "concordia.events.nats", "NatsBus": "concordia.events.nats",
    "NatsConsumer": "concordia.events.nats",
    "configure_logging": "concordia.logging",
    "Registry": "concordia.registry",
    "AsyncEngine": "concordia.runtime",
    "CompensationContext": "concordia.runtime", "Delivery": "concordia.runtime",
    "Engine": "concordia.runtime", "InputError": "concordia.runtime",
    "RunView": "concordia.runtime", "StepContext": "concordia.runtime",
    "ItemContext": "concordia.runtime", "ItemCompensationContext": "concordia.runtime",
    "open_store": "concordia.store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'concordia' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    # The lazy names are not in globals() until first used; list them for dir() and for
    # completion in interactive shells.
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AsyncEngine",
    "BindingError",
    "Bus",
    "Catalog",
    "ChildSagaError",
    "CompensationContext",
    "ConcordiaError",
    "DefinitionChangedError",
    "DefinitionError",
    "Delivery",
    "Engine",
    "Envelope",
    "EventError",
    "ExpressionError",
    "HandlerError",
    "InMemoryBus",
    "InputError",
    "ItemCompensationContext",
    "ItemContext",
    "JetStreamSettings",
    "NatsBus",
    "NatsConsumer",
    "PermanentError",
    "PolicyError",
    "Registry",
    "RetryableError",
    "RunView",
    "StepContext",
    "StoreError",
    "SystemClock",
    "UnknownRunError",
    "UnknownSagaError",
    "ValueLimitError",
    "VirtualClock",
    "__version__",
    "configure_logging",
    "new_event",
    "open_store",
]
