"""Shared fixtures: paths to the shipped definitions."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFINITIONS = os.path.join(ROOT, "definitions")
POLICIES = os.path.join(ROOT, "policies")


@pytest.fixture
def shipped_paths() -> list[str]:
    return [DEFINITIONS, POLICIES]
