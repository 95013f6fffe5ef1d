"""structlog set-up: JSON lines in production, readable console output on a terminal.

Handlers get ``ctx.log`` already bound to run_id, saga, step, attempt, correlation_id and
causation_id; the engine also binds those as structlog context variables while a handler
runs, so ``structlog.get_logger().info(...)`` inside a handler carries them too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_configured = False


def configure_logging(json: bool | None = None, level: int = logging.INFO,
                      file: TextIO | None = None) -> None:
    """Configure structlog; ``json=None`` picks JSON unless the output is a terminal."""
    global _configured
    out = file or sys.stderr
    if json is None:
        json = not out.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_factory(file),
        cache_logger_on_first_use=False,
    )
    _configured = True


def _factory(file: TextIO | None) -> Any:
    if file is not None:
        return structlog.PrintLoggerFactory(file)

    # Look sys.stderr up whenever a logger is made, not once: test runners and daemons
    # swap it, and a logger bound to a closed stream would fail on every line.
    def make(*args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)

    return make


def ensure_configured() -> None:
    """Configure with defaults unless the embedding service already configured structlog."""
    if not _configured and not structlog.is_configured():
        configure_logging()
