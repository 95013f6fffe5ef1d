"""The README's examples run as written: the first screen's prints what its comment says,
and the asyncio service completes the runs its requests start."""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _blocks(lang: str, section: str | None = None) -> list[str]:
    text = Path(ROOT, "README.md").read_text()
    if section is not None:  # only the blocks under this heading
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start:end if end >= 0 else None]
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


def test_readme_asyncio_service_completes_the_runs_requests_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    example, saga = _blocks("python")[0], _blocks("yaml")[0]
    [service] = _blocks("python", section="Embedding in an asyncio service")
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "sagas" / "checkout.yaml").write_text(saga)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    # The service reuses the first example's registry (and its list of refunds).
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(example, "README.md", "exec"), namespace)
    namespace["engine"].close()  # type: ignore[attr-defined]
    exec(compile(service, "README.md", "exec"), namespace)
    expected = re.search(r'# \.\.\. "(\w+)"$', service, re.MULTILINE)
    assert expected is not None

    with TestClient(namespace["app"]) as client:  # type: ignore[arg-type]
        run_ids = [client.post(f"/orders/o-{i}").json()["run_id"] for i in range(3)]
        deadline = time.monotonic() + 20  # bounded: a stalled worker fails the test
        statuses: list[str] = []
        while time.monotonic() < deadline:
            statuses = [client.get(f"/runs/{r}").json()["status"] for r in run_ids]
            if all(s == expected.group(1) for s in statuses):
                break
            time.sleep(0.02)
        assert statuses == [expected.group(1)] * 3
        # An unknown run is a 404, not a server error.
        missing = client.get("/runs/nope")
        assert missing.status_code == 404, missing.text
    # Each run charged, failed to ship and was refunded (the first example's run too).
    assert namespace["refunds"] == ["ch_1"] * 4


def test_the_install_commands_name_the_distribution_and_its_extras() -> None:
    import tomllib

    project = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]
    readme = Path(ROOT, "README.md").read_text()
    commands = re.findall(r"pip install (?:-q )?(?:-e )?'?([\w.-]+)(?:\[([\w,]+)\])?'?", readme)
    assert commands, "the README says how to install"
    for name, extras in commands:
        # From the index by its own name (the index's `concordia` is another project), or
        # from a clone (`.`).
        assert name in (project["name"], "."), name
        assert set(filter(None, extras.split(","))) <= set(project["optional-dependencies"])
    assert "pip install -e '.[postgres,nats]'" in readme
    assert "pip install 'concordia[" not in readme
