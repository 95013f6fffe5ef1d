"""`concordia events validate`: exit 0 valid, 1 invalid (field named), 2 usage."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from concordia.cli import build_parser
from concordia.cli.events_cmds import register
from concordia.events import new_event
from concordia.ids import new_id
from tests.conftest import DEFINITIONS, POLICIES


def run_cli(argv: list[str]) -> int:
    """Run the CLI, wiring these commands in when the main parser does not have them yet."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "events" not in sub.choices:  # type: ignore[operator]
        from concordia.cli import env_default

        register(sub, env_default)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    code: int = args.func(args)
    return code


def _envelope(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"run_id": new_id(), "model_version_id": new_id(), "score": 0.9}
    data.update(data_changes)
    return new_event("ml.run.completed", data, source="/thunderline/cerebros",
                     version=1, correlation_id="c-1").to_dict()


def _write(tmp_path: Path, name: str, payload: Any) -> str:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def _validate(path: str) -> list[str]:
    return ["events", "validate", path, "--definitions", DEFINITIONS, POLICIES]


def test_valid_envelope_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "ok.json", _envelope())
    assert run_cli(_validate(path)) == 0
    assert "valid:" in capsys.readouterr().out


def test_invalid_payload_exits_one_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.json", _envelope(run_id="nope"))
    assert run_cli(_validate(path)) == 1
    assert "field 'run_id': 'nope' is not a 'uuid'" in capsys.readouterr().out


def test_unknown_type_exits_one_with_a_suggestion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _envelope()
    raw["type"] = "ml.run.complete"
    raw.pop("dataschema")
    assert run_cli(_validate(_write(tmp_path, "typo.json", raw))) == 1
    assert "did you mean 'ml.run.completed'?" in capsys.readouterr().out


def test_bad_envelope_attribute_exits_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _envelope()
    raw["specversion"] = "0.3"
    assert run_cli(_validate(_write(tmp_path, "old.json", raw))) == 1
    assert "attribute 'specversion'" in capsys.readouterr().out


def test_yaml_envelope_and_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _envelope()
    yaml_text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in good.items()) + "\n"
    assert run_cli(_validate(_write(tmp_path, "ok.yaml", yaml_text))) == 0
    both = [good, _envelope(score="high")]
    assert run_cli(_validate(_write(tmp_path, "list.json", both))) == 1
    out = capsys.readouterr().out
    assert "list.json[0]" in out
    assert "list.json[1]: " in out
    assert "field 'score'" in out


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = json.dumps(_envelope()).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert run_cli(_validate("-")) == 0


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"id": 1, "id": 2}', "duplicate key 'id'"),
    ('{"id": NaN}', "NaN is not JSON"),
    ("{not json", "invalid JSON"),
    ("a: [1\n", "yaml-syntax"),
    ("!!python/object:os.system x\n", "bad-tag"),
])
def test_unparsable_files_exit_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   text: str, fragment: str) -> None:
    assert run_cli(_validate(_write(tmp_path, "broken.txt", text))) == 1
    assert fragment in capsys.readouterr().out


def test_usage_errors_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_validate(str(tmp_path / "absent.json"))) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run_cli(["events", "validate"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    path = _write(tmp_path, "ok.json", _envelope())
    assert run_cli(["events", "validate", path, "--definitions", str(empty)]) == 2
    assert "no event definitions found" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["events", "validate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status" in out
    assert "CONCORDIA_DEFINITIONS" in out


def test_every_problem_of_an_envelope_is_reported_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _envelope()
    raw.update(id="nope", time="yesterday", specversion="0.3")
    raw.pop("source")
    assert run_cli(_validate(_write(tmp_path, "bad.json", raw))) == 1
    lines = capsys.readouterr().out.splitlines()
    attributes = [ln.split("attribute ", 1)[1].split(":")[0] for ln in lines]
    assert sorted(attributes) == ["'id'", "'source'", "'specversion'", "'time'"]


def test_every_payload_problem_is_reported_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _envelope()
    raw["data"] = {"score": "high", "extra": 1}  # run_id and model_version_id missing
    assert run_cli(_validate(_write(tmp_path, "bad.json", raw))) == 1
    lines = capsys.readouterr().out.splitlines()
    fields = sorted(ln.split("field ", 1)[1].split(":")[0] for ln in lines)
    assert fields == ["'extra'", "'model_version_id'", "'run_id'", "'score'"]
    assert len(lines) == len(set(lines)) == 4


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _envelope()
    bad = _envelope(score="high")
    path = _write(tmp_path, "two.json", [good, bad])
    assert run_cli([*_validate(path), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)["events"]
    assert [e["valid"] for e in report] == [True, False]
    assert report[0]["event"] == "ml.run.completed v1"
    assert len(report[1]["problems"]) == 1


def test_integers_json_cannot_carry_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(_envelope()).replace('"score": 0.9', '"score": 90071992547409930')
    assert run_cli(_validate(_write(tmp_path, "big.json", text))) == 1
    assert "beyond what JSON consumers read exactly" in capsys.readouterr().out


def test_envelope_and_payload_problems_come_in_one_pass(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _envelope(run_id="nope")
    raw.update(id="nope")
    raw.pop("source")
    assert run_cli(_validate(_write(tmp_path, "bad.json", raw))) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("attribute 'id'" in ln for ln in lines)
    assert any("attribute 'source'" in ln for ln in lines)
    assert any("field 'run_id': 'nope' is not a 'uuid'" in ln for ln in lines)


def test_an_unsound_type_or_version_leaves_the_payload_unchecked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Against which entry would the payload be checked? None: only the attribute is wrong.
    raw = _envelope(run_id="nope")
    raw.update(id="nope", dataschema="urn:concordia:event:ml.run.completed:vX")
    assert run_cli(_validate(_write(tmp_path, "bad.json", raw))) == 1
    out = capsys.readouterr().out
    assert "attribute 'dataschema'" in out
    assert "field 'run_id'" not in out
