"""The public surface is deliberate: these names, and each one resolves."""

from __future__ import annotations

import subprocess
import sys

import concordia

PUBLIC = {
    "AsyncEngine", "BindingError", "Bus", "Catalog", "ChildSagaError", "CompensationContext",
    "ConcordiaError", "ItemCompensationContext", "ItemContext",
    "DefinitionChangedError", "DefinitionError", "Delivery", "Engine", "Envelope",
    "EventError", "ExpressionError", "InMemoryBus", "InputError", "PermanentError",
    "PolicyError", "Registry", "RetryableError", "RunView", "StepContext", "StoreError",
    "SystemClock", "UnknownRunError", "UnknownSagaError", "ValueLimitError", "VirtualClock",
    "__version__",
    "new_event", "open_store",
}


def test_exported_names_are_pinned() -> None:
    assert set(concordia.__all__) == PUBLIC


def test_every_exported_name_resolves() -> None:
    for name in concordia.__all__:
        assert getattr(concordia, name) is not None, name


def test_importing_the_package_loads_no_runtime() -> None:
    # The CLI's start-up path: `import concordia` must stay cheap.
    code = ("import sys, concordia; "
            "print(sorted(m for m in ('concordia.runtime.engine', 'cel', 'structlog') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
