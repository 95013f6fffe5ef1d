"""docs/explore.md as written: its YAML validates, its example runs and prints what it
says, and the README points to it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from concordia.definitions.documents import parse_bytes
from tests.conftest import ROOT

DOC = Path(ROOT, "docs", "explore.md")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)


def test_the_saga_example_validates() -> None:
    [saga] = [b for b in _blocks("yaml") if b.startswith("name:")]
    parsed = parse_bytes(saga.encode(), "checkout.yaml")
    assert parsed.problems == []
    assert parsed.sagas[0].steps[0].checkpoints  # type: ignore[union-attr]


def test_the_test_example_runs_as_written(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    [saga] = [b for b in _blocks("yaml") if b.startswith("name:")]
    [python] = _blocks("python")
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "sagas" / "checkout.yaml").write_text(saga)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python, "explore.md", "exec"), {"__name__": "doc"})
    expected = re.search(r"# (checkout: .*)$", python, re.MULTILINE)
    assert expected is not None
    assert out.getvalue().strip() == expected.group(1).strip()


def test_the_readme_points_to_it() -> None:
    assert "[the explorer](docs/explore.md)" in Path(ROOT, "README.md").read_text("utf-8")
