"""Embedding the engine leaves the host process as it was: its logging is the host's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from concordia.definitions.catalog import Catalog
from concordia.registry import Registry
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.engine import Engine
from tests.runtime.sagas import action, saga


def test_engines_do_not_configure_structlog_for_their_host(
        catalog_of: Callable[..., Catalog]) -> None:
    structlog.reset_defaults()
    catalog = catalog_of(saga("quiet", [action("only")]))
    registry = Registry()
    registry.add_action("only.do", lambda ctx: {})
    registry.add_compensation("only.undo", lambda ctx: None)
    engines: list[Any] = [Engine(catalog, registry), AsyncEngine(catalog, registry)]
    assert not structlog.is_configured()
    engine = engines[0]
    run = engine.start("quiet")
    engine.run_until_idle()
    assert engine.get_run(run.id).status == "completed"
    assert not structlog.is_configured()  # running handlers did not configure it either
    engine.close()
    asyncio.run(engines[1].aclose())
