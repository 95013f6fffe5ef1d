"""The version has one source, ``concordia.__version__``: the distribution's metadata, the
command line and the changelog's latest released entry say the same."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import concordia
from tests.conftest import ROOT


def test_the_version_is_stated_once() -> None:
    project = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert version(project["name"]) == concordia.__version__


def test_the_command_line_and_the_changelog_agree() -> None:
    out = subprocess.run([sys.executable, "-m", "concordia.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"concordia {concordia.__version__}"
    changelog = Path(ROOT, "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.MULTILINE)
    assert released[0] == concordia.__version__
