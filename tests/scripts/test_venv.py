"""``scripts/venv.sh``: the scripts install into .venv only when pyproject.toml or the
Python changed, so a second ``./scripts/demo`` starts at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

# A stand-in interpreter: `-VV` prints a version, `-m venv DIR` makes DIR/bin/python (this
# same script), and every `-m pip install` is written to the log instead of run.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -VV ]; then echo "Python ${FAKE_VERSION:-3.11.7}"; exit 0; fi
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2 $3" = "-m pip install" ]; then echo "${@: -1}" >> "$INSTALL_LOG"; exit 0; fi
exit 1
"""


def _ensure(project: Path, spec: str, **env: str) -> list[str]:
    script = f". {ROOT}/scripts/venv.sh && ensure_venv .venv '{spec}' {project}/python"
    subprocess.run(["bash", "-c", script], cwd=project, check=True,
                   env={**os.environ, "INSTALL_LOG": str(project / "log"), **env})
    log = project / "log"
    return log.read_text().split() if log.exists() else []


def test_installs_again_only_when_pyproject_or_python_changed(tmp_path: Path) -> None:
    (tmp_path / "python").write_text(_FAKE_PYTHON)
    (tmp_path / "python").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    # pip upgraded, then the project installed: once.
    assert _ensure(tmp_path, ".") == ["pip", "."]
    assert _ensure(tmp_path, ".") == ["pip", "."]
    # Another set of extras is its own install; then it is kept too.
    assert _ensure(tmp_path, ".[dev]") == ["pip", ".", "pip", ".[dev]"]
    assert _ensure(tmp_path, ".") == ["pip", ".", "pip", ".[dev]"]
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert _ensure(tmp_path, ".")[-1:] == ["."]
    assert len(_ensure(tmp_path, ".")) == 6
    assert len(_ensure(tmp_path, ".", FAKE_VERSION="3.12.1")) == 8
