"""Concordia: a declarative saga engine.

Sagas, the event taxonomy and policies are YAML validated against JSON Schema; one
interpreter compiles each saga into a state machine and runs it on a durable journal,
calling the handlers a service registers.
"""

from concordia.clock import SystemClock, VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.errors import (
    BindingError,
    ConcordiaError,
    DefinitionError,
    EventError,
    ExpressionError,
    PermanentError,
    PolicyError,
    RetryableError,
    StoreError,
    UnknownRunError,
    UnknownSagaError,
)
from concordia.events.bus import Bus, InMemoryBus
from concordia.events.envelope import Envelope, new_event
from concordia.registry import Registry
from concordia.runtime import (
    CompensationContext,
    Delivery,
    Engine,
    InputError,
    RunView,
    StepContext,
)
from concordia.store import open_store

__version__ = "0.1.0"

__all__ = [
    "BindingError",
    "Bus",
    "Catalog",
    "CompensationContext",
    "ConcordiaError",
    "DefinitionError",
    "Delivery",
    "Engine",
    "Envelope",
    "EventError",
    "ExpressionError",
    "InMemoryBus",
    "InputError",
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
    "VirtualClock",
    "__version__",
    "new_event",
    "open_store",
]
