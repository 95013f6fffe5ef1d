"""Keeping what a worker does not use out of its memory: structlog's import of ``rich``.

structlog imports ``rich`` (and through it pygments and attrs) when it is installed, to
render tracebacks on a console, though Concordia's logging formats exceptions itself
(``format_exc_info`` before the renderer) and only the command line's tables use rich.
Measured on 2026-12-07, a worker holding the reference domain's catalog and the
PostgreSQL store: 3 MB of its resident memory. :func:`install` hides ``rich`` from
structlog's own modules while they import (they fall back to plain tracebacks, as they do
where rich is missing); any other importer, the command line's tables included, gets rich
as usual. The ``concordia`` command installs it (a process Concordia owns, whose logging
it configures); a service that embeds the engine is left as it is, so its own structlog
set-up keeps rich tracebacks. It removes itself once structlog has asked.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# structlog's modules that import rich; once both have asked, the finder's work is done.
_ASKERS = frozenset({"structlog.tracebacks", "structlog.dev"})


class _RichHiddenFromStructlog:
    """A meta-path finder that refuses ``rich`` to structlog's modules only."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "rich" and not name.startswith("rich."):
            return None
        asker = sys._getframe(1)
        while asker is not None and asker.f_globals.get("__name__", "").startswith(
                "importlib"):
            asker = asker.f_back  # type: ignore[assignment]
        module = "" if asker is None else asker.f_globals.get("__name__", "")
        if module not in _ASKERS:
            return None
        self.asked.add(module)
        if self.asked == _ASKERS:
            uninstall()
        raise ImportError(f"{name} is not imported for structlog (see concordia.lean)",
                          name=name)


_FINDER = _RichHiddenFromStructlog()


def install() -> None:
    """Hide rich from structlog, unless either is imported already."""
    if "structlog" in sys.modules or "rich" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
