"""The layers keep to their side: no module imports a private name of another, the
service reaches the engine through its public API only (never the CLI, the core or a
store's insides), and the reference domain imports only what a user's code would.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import concordia

ENGINE = Path(concordia.__file__).parent
DOMAIN = ENGINE.parents[1] / "thunderline"


def imports(root: Path) -> Iterator[tuple[Path, str, str]]:
    """(file, module, name) of every ``from module import name`` under ``root``, and
    (file, module, "") of every ``import module``."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    yield path, node.module, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, ""


def test_no_private_name_crosses_a_module() -> None:
    crossing = [f"{path.name}: {module}.{name}"
                for root in (ENGINE, DOMAIN) for path, module, name in imports(root)
                if name.startswith("_") and not name.startswith("__")]
    assert crossing == []


def test_the_service_uses_the_engines_public_api() -> None:
    # What the service may import from the runtime and the stores: the async engine, the
    # views it answers with, and the records and errors those views carry.
    allowed = {"concordia.runtime.aengine", "concordia.runtime.views",
               "concordia.runtime", "concordia.store.records", "concordia.store.base"}
    reached = sorted({f"{path.name}: {module}" for path, module, _ in
                      imports(ENGINE / "service")
                      if module.startswith(("concordia.runtime", "concordia.store",
                                             "concordia.cli")) and module not in allowed})
    assert reached == []


def test_the_reference_domain_imports_only_the_public_package() -> None:
    public = {"concordia", "concordia.testing"}
    reached = sorted({f"{path.relative_to(DOMAIN)}: {module}"
                      for path, module, _ in imports(DOMAIN)
                      if module.split(".")[0] == "concordia" and module not in public})
    assert reached == []
