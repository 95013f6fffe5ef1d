"""The README's example runs as written and prints what its comment says."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _blocks(lang: str) -> list[str]:
    text = Path(ROOT, "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python, saga = _blocks("python")[0], _blocks("yaml")[0]
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "sagas" / "checkout.yaml").write_text(saga)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python, "README.md", "exec"), {"__name__": "readme"})
    expected = re.search(r"# (compensated .*)$", python, re.MULTILINE)
    assert expected is not None
    assert out.getvalue().strip() == expected.group(1).strip()
    assert os.path.exists(tmp_path / "runs.db")


def test_first_screen_has_exactly_two_setup_commands() -> None:
    first_screen = Path(ROOT, "README.md").read_text().splitlines()[:24]
    commands = [ln for ln in first_screen if ln.startswith("./scripts/")]
    assert [c.split()[0] for c in commands] == ["./scripts/demo", "./scripts/test"]
    ci = Path(ROOT, ".ci", "run").read_text()
    assert "./scripts/test" in ci
