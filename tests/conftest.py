"""Shared fixtures (paths to the shipped definitions, structlog kept as it was) and the
suite's order: the long fault and load tests first."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFINITIONS = os.path.join(ROOT, "definitions")
POLICIES = os.path.join(ROOT, "policies")


@pytest.fixture
def shipped_paths() -> list[str]:
    return [DEFINITIONS, POLICIES]


@pytest.fixture(autouse=True)
def _structlog_as_it_was() -> Iterator[None]:
    """Commands under test configure structlog for their process (level, output); give
    the next test the configuration this one started with."""
    import structlog

    saved = structlog.get_config()
    configured = structlog.is_configured()
    yield
    if configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (in their own order, then the rest in theirs): on two cores
    (``pytest -n 2``) the long fault and load tests start at once and the short ones fill
    in beside them, instead of one long test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
