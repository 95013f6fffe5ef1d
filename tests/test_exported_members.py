"""The public surface is deliberate: these names, and each one resolves; the reference
domain, like a user's code, needs nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import concordia
from tests.conftest import ROOT

PUBLIC = {
    "AsyncEngine", "BindingError", "Bus", "Catalog", "ChildSagaError", "CompensationContext",
    "ConcordiaError", "ItemCompensationContext", "ItemContext",
    "DefinitionChangedError", "DefinitionError", "Delivery", "Engine", "Envelope",
    "EventError", "ExpressionError", "HandlerError", "InMemoryBus", "InputError",
    "JetStreamSettings", "NatsBus", "NatsConsumer", "PermanentError",
    "PolicyError", "Registry", "RetryableError", "RunView", "StepContext", "StoreError",
    "SystemClock", "UnknownRunError", "UnknownSagaError", "ValueLimitError", "VirtualClock",
    "__version__",
    "configure_logging", "new_event", "open_store",
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


def test_dir_lists_the_lazy_names() -> None:
    names = dir(concordia)
    assert set(concordia.__all__) <= set(names)
    assert names == sorted(names)


def test_the_reference_domain_imports_only_the_public_api() -> None:
    # thunderline/ is the model of a user's code: `concordia` and `concordia.testing`,
    # nothing from the engine's modules.
    allowed = {"concordia", "concordia.testing"}
    found: dict[str, set[str]] = {}
    for path in sorted(Path(ROOT, "thunderline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.split(".")[0] == "concordia":
                    found.setdefault(name, set()).add(path.name)
    assert found, "the reference domain imports nothing of concordia?"
    assert {name: files for name, files in found.items() if name not in allowed} == {}
