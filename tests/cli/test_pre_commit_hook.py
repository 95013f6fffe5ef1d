"""The pre-commit hook, installed by pre-commit itself from this repository.

``pre-commit try-repo`` builds the hook's environment the way a user's pre-commit does
(a fresh virtualenv with this package installed) and runs it in a project that has only
``definitions/``: the hook's default paths must suit such a project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SAGA = ("name: s\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n    compensate: none\n"
        "    reason: read-only\n")


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_runs_in_a_project_with_only_definitions(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "definitions").mkdir(parents=True)
    (project / "definitions" / "s.yaml").write_text(SAGA)
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "definitions only")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    env.pop("CONCORDIA_DEFINITIONS", None)

    def try_repo() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", ROOT,
                               "concordia-validate", "--all-files"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600, check=False)

    done = try_repo()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "concordia validate" in done.stdout
    assert "Passed" in done.stdout
    # The same hook fails a broken definition, naming it.
    (project / "definitions" / "s.yaml").write_text(SAGA.replace("    compensate: none\n"
                                                                 "    reason: read-only\n", ""))
    done = try_repo()
    assert done.returncode == 1
    assert "Failed" in done.stdout
    assert "missing-compensation" in done.stdout
