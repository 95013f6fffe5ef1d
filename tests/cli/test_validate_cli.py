"""``concordia validate``: exit codes, the four report formats and ``--handlers``.

Exit codes: 0 clean, 1 problems found, 2 usage error (a bad option value, a handlers
module that cannot be imported or has no registry).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from concordia.cli import main
from tests.cli import partial_handlers
from tests.conftest import DEFINITIONS, POLICIES, ROOT

BAD = Path(ROOT) / "tests" / "definitions" / "bad"
# Three problems in two files: an unknown event with a suggestion, a missing compensation.
BROKEN = [str(BAD / "xref_unknown_emit_event.yaml"), str(BAD / "missing_compensation.yaml")]
EXPECTED = {
    (str(BAD / "xref_unknown_emit_event.yaml"), 8, 9, "unknown-event"),
    (str(BAD / "missing_compensation.yaml"), 4, 5, "missing-compensation"),
}
HANDLERS = "tests.cli.partial_handlers"


def _validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as CI runs it: a fresh interpreter, real exit status and streams."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("CONCORDIA_HANDLERS", None)
    return subprocess.run([sys.executable, "-m", "concordia.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


# -- exit codes ----------------------------------------------------------------------------

def test_clean_tree_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES)
    assert code == 0
    assert out.strip() == "no problems"


def test_problems_exit_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, *BROKEN)
    assert code == 1
    for file, line, column, rule in EXPECTED:
        assert f"{file}:{line}:{column}: error {rule} " in out
    assert out.strip().endswith("2 error(s), 0 warning(s)")


def test_bad_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", DEFINITIONS, "--format", "xml"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "invalid choice: 'xml'" in err


@pytest.mark.parametrize("module", ["tests.cli.does_not_exist", "tests.cli.no_registry"])
def test_unusable_handlers_module_is_a_usage_error(
        module: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _validate(capsys, DEFINITIONS, POLICIES, "--handlers", module)
    assert code == 2
    assert out == ""
    assert err.startswith(f"concordia: error: --handlers {module}: ")
    assert "Traceback" not in err


def test_exit_codes_from_a_real_process() -> None:
    clean = _run_cli("validate")  # defaults to definitions/ and policies/ in the cwd
    assert (clean.returncode, clean.stderr) == (0, "")
    broken = _run_cli("validate", DEFINITIONS, POLICIES, *BROKEN, "--format", "github")
    assert broken.returncode == 1
    assert len(broken.stdout.splitlines()) == 2
    usage = _run_cli("validate", "--format", "xml")
    assert usage.returncode == 2
    missing = _run_cli("validate", "--handlers", "tests.cli.does_not_exist")
    assert missing.returncode == 2
    for proc in (clean, broken, usage, missing):
        assert "Traceback" not in proc.stderr


# -- formats -------------------------------------------------------------------------------

def test_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, *BROKEN, "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["count"] == len(report["problems"]) == 2
    assert {(p["file"], p["line"], p["column"], p["code"]) for p in report["problems"]} == (
        EXPECTED)
    unknown = next(p for p in report["problems"] if p["code"] == "unknown-event")
    assert unknown["pointer"] == "/steps/0/emit/0/event"
    assert unknown["severity"] == "error"
    assert unknown["hint"] == "did you mean 'ml.run.completed'?"


def test_json_format_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, "--format", "json")
    assert code == 0
    assert json.loads(out) == {"problems": [], "count": 0}


def test_sarif_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, *BROKEN, "--format", "sarif")
    assert code == 1
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    assert "sarif" in sarif["$schema"]
    (run,) = sarif["runs"]
    assert run["tool"]["driver"]["name"] == "concordia"
    rules = {r["id"] for r in run["tool"]["driver"]["rules"]}
    seen = set()
    for result in run["results"]:
        assert result["ruleId"] in rules
        assert result["level"] == "error"
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        region = physical["region"]
        assert region["startLine"] >= 1
        assert region["startColumn"] >= 1
        seen.add((_path_of(physical["artifactLocation"]["uri"]), region["startLine"],
                  region["startColumn"], result["ruleId"]))
    assert seen == EXPECTED


def _path_of(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path) if uri.startswith("file:") else unquote(uri)


def test_sarif_uri_is_a_valid_uri_reference(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spaced = tmp_path / "my sagas" / "bad, really.yaml"
    spaced.parent.mkdir()
    spaced.write_text((BAD / "missing_compensation.yaml").read_text())
    code, out, _ = _validate(capsys, str(spaced), "--format", "sarif")
    assert code == 1
    (result,) = json.loads(out)["runs"][0]["results"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert " " not in uri
    assert _path_of(uri) == str(spaced)


def test_github_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, *BROKEN, "--format", "github")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2
    seen = set()
    for line in lines:
        match = re.fullmatch(r"::error file=([^,]+),line=(\d+),col=(\d+),title=([\w-]+)::(.+)",
                             line)
        assert match, line
        seen.add((match[1], int(match[2]), int(match[3]), match[4]))
    assert seen == EXPECTED
    assert "did you mean 'ml.run.completed'?" in out


def test_github_format_escapes_property_values(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Workflow command properties end at `,` and the message starts at `::`; a file name
    # holding either must be escaped or GitHub misreads the annotation.
    odd = tmp_path / "a,b::c.yaml"
    odd.write_text((BAD / "missing_compensation.yaml").read_text())
    code, out, _ = _validate(capsys, str(odd), "--format", "github")
    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith("::error file=")
    props = line[len("::error "):].split("::", 1)[0]
    assert dict(p.split("=", 1) for p in props.split(","))["file"] == (
        str(odd).replace(",", "%2C").replace(":", "%3A"))


def test_github_format_clean_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, "--format", "github")
    assert (code, out) == (0, "")


# -- --handlers ----------------------------------------------------------------------------

def _unbound_in_yaml() -> set[tuple[str, int, str, str]]:
    """(file, line, kind, name) of every handler the partial registry leaves unbound,
    found by reading the saga files line by line (independently of the catalog)."""
    registry = partial_handlers.registry
    bound = {"action": set(registry.action_names()),
             "compensate": set(registry.compensation_names())}
    found = set()
    for path in sorted(Path(DEFINITIONS, "sagas").glob("*.yaml")):
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            match = re.fullmatch(r"\s+(action|compensate): (\S+)", text)
            if match and match[2] != "none" and match[2] not in bound[match[1]]:
                found.add((str(path), number, match[1], match[2]))
    return found


def test_handlers_names_every_unbound_handler_with_file_and_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    expected = _unbound_in_yaml()
    # The partial registry leaves two sagas half or wholly unbound.
    assert len(expected) >= 10
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, "--handlers", HANDLERS,
                             "--format", "json")
    assert code == 1
    problems: list[dict[str, Any]] = json.loads(out)["problems"]
    assert {p["code"] for p in problems} == {"unbound-handler"}
    got = set()
    for p in problems:
        match = re.fullmatch(r"(action|compensation) handler '([\w.]+)' is not registered",
                             p["message"])
        assert match, p["message"]
        kind = "action" if match[1] == "action" else "compensate"
        got.add((p["file"], p["line"], kind, match[2]))
    assert got == expected
    misspelt = next(p for p in problems if "thunderbolt.fail_model_run" in p["message"])
    assert misspelt["hint"] == "did you mean 'thunderbolt.fail_modelrun'?"


def test_handlers_text_output_names_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, "--handlers", HANDLERS)
    assert code == 1
    for file, line, _kind, name in _unbound_in_yaml():
        assert re.search(rf"^{re.escape(file)}:{line}:\d+: error unbound-handler .*'{name}'",
                         out, re.MULTILINE), (file, line, name)


def test_handlers_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CONCORDIA_HANDLERS", HANDLERS)
    code, out, _ = _validate(capsys, DEFINITIONS, POLICIES, "--format", "json")
    assert code == 1
    assert len(json.loads(out)["problems"]) == len(_unbound_in_yaml())


def test_handlers_that_bind_everything_pass(capsys: pytest.CaptureFixture[str]) -> None:
    # The sagas of user_provisioning alone, against a registry that binds all of them.
    saga = os.path.join(DEFINITIONS, "sagas", "user_provisioning.yaml")
    events = os.path.join(DEFINITIONS, "events")
    code, out, _ = _validate(capsys, saga, events, "--handlers", HANDLERS)
    assert (code, out.strip()) == (0, "no problems")


# -- default paths and missing paths -------------------------------------------------------

def test_no_paths_in_a_project_with_only_definitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "definitions" / "s.yaml").write_text(
        "name: s\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n    compensate: none\n"
        "    reason: read-only\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONCORDIA_DEFINITIONS", raising=False)
    code, out, err = _validate(capsys)
    assert (code, out.strip(), err) == (0, "no problems", "")


def test_no_paths_and_nothing_to_check_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONCORDIA_DEFINITIONS", raising=False)
    code, out, err = _validate(capsys)
    assert code == 2
    assert out == ""
    assert "none of definitions, policies exists" in err


def test_a_missing_path_is_a_usage_error_naming_it(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nowhere")
    code, out, err = _validate(capsys, DEFINITIONS, missing)
    assert code == 2
    assert out == ""
    assert err == f"concordia: error: no such file or directory: {missing}\n"
