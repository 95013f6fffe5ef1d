"""`concordia lint`: silent on the shipped tree, finds every seed gap reintroduced in fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from concordia.cli import main
from concordia.definitions import Catalog
from concordia.lint import Finding, audit
from concordia.lint.audit import render_markdown
from concordia.registry import load_registry
from tests.conftest import DEFINITIONS, POLICIES, ROOT

GAPS = os.path.join(ROOT, "tests", "fixtures", "gaps")
GAP_PATHS = [os.path.join(GAPS, "definitions"), os.path.join(GAPS, "policies")]
GAPPY = "tests.fixtures.gaps.gappy_handlers"


def test_shipped_definitions_and_handlers_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lint", DEFINITIONS, POLICIES, "--handlers", "thunderline.handlers",
                 "--strict"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "no gaps found"


@pytest.fixture(scope="module")
def findings() -> list[Finding]:
    registry = load_registry(GAPPY)
    return audit(Catalog.load(GAP_PATHS, registry), registry)


# (seed gap, rule, saga, step or event name found in the message)
EXPECTED = [
    ("GAP-001", "CG-STUB-COMPENSATION", "cerebros_nas", "dispatch_training"),
    ("GAP-002", "CG-STUB-COMPENSATION", "upm_activation", "sync_adapters"),
    ("GAP-003", "CG-STUB-COMPENSATION", "user_provisioning", "create_default_community"),
    ("GAP-004", "TR-NO-CORRELATION", "user_provisioning", "send_magic_link"),
    ("GAP-005", "CG-STUB-ACTION", "cerebros_nas", "persist_version"),
    ("GAP-006", "PL-AUTO-APPROVE", None, None),
    ("GAP-007", "AW-POLLING", "cerebros_nas", "await_completion"),
    ("DRIFT-001", "TX-UNKNOWN-EVENT", "user_provisioning", "user.onboarding.complete"),
    ("DRIFT-003", "TX-UNKNOWN-EVENT", "cerebros_nas", "ml.run.complete"),
    ("silence", "CG-MISSING-COMPENSATION", "vault_rotation", "provision_vault"),
    ("orphan", "TX-ORPHAN-EVENT", None, "ml.run.completed"),
]


@pytest.mark.parametrize(("gap", "rule", "saga", "what"), EXPECTED, ids=[e[0] + "-" + e[1]
                                                                        for e in EXPECTED])
def test_each_reintroduced_gap_is_found(findings: list[Finding], gap: str, rule: str,
                                        saga: str | None, what: str | None) -> None:
    hits = [f for f in findings if f.rule == rule and (saga is None or f.saga == saga)
            and (what is None or f.step == what or what in f.message)]
    assert hits, f"{gap}: no {rule} finding for {saga}/{what} in {findings}"
    for f in hits:
        assert f.line > 0
        assert f.file


def test_misnamed_event_gets_the_taxonomy_name(findings: list[Finding]) -> None:
    [hit] = [f for f in findings if "ml.run.complete'" in f.message]
    assert "did you mean 'ml.run.completed'?" in hit.message


def test_markdown_tracker_has_an_entry_per_finding(findings: list[Finding]) -> None:
    text = render_markdown(findings)
    assert text.count("### GAP-") == len(findings)
    for heading in ("**File**", "**Step**", "**Impact**", "**Recommendation**"):
        assert text.count(heading) == len(findings)


def test_cli_exit_code_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lint", *GAP_PATHS, "--handlers", GAPPY, "--format", "json"])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert {f["rule"] for f in data["findings"]} >= {r for _, r, _, _ in EXPECTED}


# -- never green on input that does not load -----------------------------------------------

SAGA_OK = ("name: s\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n    compensate: none\n"
           "    reason: read-only\n")


@pytest.mark.parametrize(("name", "text", "code"), [
    ("syntax.yaml", "name: s\nsteps: [\n", "yaml-syntax"),
    ("schema.yaml", SAGA_OK.replace("version: 1", "version: one"), "wrong-type"),
    ("binary.yaml", "\x00\x01", "yaml-syntax"),
    ("empty.yaml", "# nothing\n", "empty-file"),
])
def test_lint_fails_on_a_file_that_does_not_load(tmp_path: Path, name: str, text: str,
                                                 code: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yaml").write_text(SAGA_OK.replace("name: s", "name: fine"))
    (tmp_path / name).write_text(text)
    assert main(["lint", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "no gaps found\n" not in out
    assert f"{tmp_path / name}" in out
    assert f"error {code}" in out
    assert "keep definitions from loading" in out
    assert main(["lint", str(tmp_path), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["code"] for p in report["problems"]] == [code]
    assert main(["lint", str(tmp_path), "--format", "markdown"]) == 1
    assert "## Definitions that do not load" in capsys.readouterr().out


def test_lint_on_a_missing_path_is_a_usage_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert "no gaps found" not in captured.out
    assert "no such file or directory" in captured.err


def test_lint_on_an_empty_directory_fails(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path)]) == 1
    assert "no-definitions" in capsys.readouterr().out


def test_lint_reports_as_validate_does(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SAGA_OK + "    colour: blue\n")
    main(["validate", str(bad)])
    validate_lines = capsys.readouterr().out.splitlines()[:-1]
    main(["lint", str(bad)])
    lint_out = capsys.readouterr().out
    for line in validate_lines:
        assert line in lint_out


def test_without_handlers_it_says_what_it_could_not_check(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The gappy tree's stub compensations are in its handlers: an audit that cannot read
    # them must not read as clean.
    code = main(["lint", *GAP_PATHS])
    out = capsys.readouterr().out
    assert code == 1  # the definitions' own gaps
    assert "CG-STUB-COMPENSATION" not in out
    assert "handler(s) the sagas name were not checked" in out
    assert "give --handlers MODULE" in out


def test_a_clean_tree_without_handlers_is_not_no_gaps_found(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", DEFINITIONS, POLICIES]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "no gaps found in the definitions; their handlers were not checked"
    # --strict fails an audit that could not look at a single handler.
    assert main(["lint", DEFINITIONS, POLICIES, "--strict"]) == 1
    capsys.readouterr()
    assert main(["lint", DEFINITIONS, POLICIES, "--format", "json"]) == 0
    unchecked = json.loads(capsys.readouterr().out)["unchecked_handlers"]
    assert "thunderlink.create_user" in unchecked
    assert main(["lint", DEFINITIONS, POLICIES, "--format", "markdown"]) == 0
    assert "## Handlers not checked" in capsys.readouterr().out
    # Given the handlers, nothing is left unchecked.
    assert main(["lint", DEFINITIONS, POLICIES, "--handlers", "thunderline.handlers",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchecked_handlers"] == []
