"""Shared fixtures: paths to the shipped definitions."""

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
