"""`concordia policy eval`: exit 0 approve, 1 reject, 2 no decision (usage or error)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFINITIONS, POLICIES
from tests.events.test_cli_events import run_cli

GOOD = {"drift_score": 0.12, "shadow_validated": True, "adapter_count": 3}


def _eval(tmp_path: Path, inputs: Any, *extra: str, name: str = "in.json") -> int:
    path = tmp_path / name
    path.write_text(inputs if isinstance(inputs, str) else json.dumps(inputs))
    return run_cli(["policy", "eval", "upm_activation", "--input", str(path),
                    "--definitions", DEFINITIONS, POLICIES, *extra])


def test_approval_exits_zero_and_prints_the_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(tmp_path, GOOD) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "approve"
    assert record["rule"] is None
    assert record["policy"] == "upm_activation"
    assert record["inputs"] == GOOD


def test_rejection_exits_one_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_inputs = "drift_score: 0.5\nshadow_validated: true\nadapter_count: 3\n"
    assert _eval(tmp_path, yaml_inputs, name="in.yaml") == 1
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "reject"
    assert record["rule"] == "drift_too_high"
    assert record["reason"] == "drift 0.5 exceeds the 0.3 threshold"


def test_missing_input_exits_two_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(tmp_path, {"drift_score": 0.1, "shadow_validated": True}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no record: nothing was decided
    assert "input 'adapter_count': required field is missing" in captured.err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(GOOD).encode())))
    assert run_cli(["policy", "eval", "upm_activation", "--input", "-",
                    "--definitions", POLICIES]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "approve"


def test_usage_errors_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["policy", "eval", "upm_activaton", "--input", "-",
                    "--definitions", POLICIES]) == 2
    assert "did you mean 'upm_activation'?" in capsys.readouterr().err
    assert _eval(tmp_path, GOOD, "--policy-version", "9") == 2
    assert "has no version 9" in capsys.readouterr().err
    assert _eval(tmp_path, "[1, 2]") == 2
    assert "must be an object" in capsys.readouterr().err
    assert _eval(tmp_path, "{broken") == 2
    assert "invalid JSON" in capsys.readouterr().err
    assert run_cli(["policy", "eval", "upm_activation", "--input",
                    str(tmp_path / "absent.json")]) == 2
    assert run_cli(["policy", "eval", "upm_activation"]) == 2  # --input is required


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["policy", "eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "0  the policy approved" in out
    assert "1  the policy rejected" in out
    assert "2  no decision" in out


def test_every_input_problem_is_reported_once_and_nothing_decided(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(tmp_path, {"drift_score": "high", "colour": "blue"}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    problems = [ln for ln in lines if "input '" in ln]
    fields = sorted(ln.split("input '", 1)[1].split("'")[0] for ln in problems)
    assert fields == ["adapter_count", "colour", "drift_score", "shadow_validated"]
    assert len(problems) == len(set(problems))
    assert "nothing was decided" in lines[-1]
