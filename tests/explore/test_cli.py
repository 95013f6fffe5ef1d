"""``concordia simulate`` and ``concordia prove`` from the command line: formats, exit
codes, located output, no handler imported unless asked, bad trees as validate says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from concordia.cli import main
from tests.conftest import ROOT
from tests.explore.conftest import CONSTRUCTS, CORPUS

CORPUS_PATHS = [str(CORPUS / "definitions"), str(CORPUS / "policies")]
CONSTRUCT_PATHS = [str(CONSTRUCTS / "definitions"), str(CONSTRUCTS / "policies")]


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CONCORDIA_DEFINITIONS", raising=False)


def test_simulate_text(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "user_provisioning"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("saga user_provisioning v1: 49 paths")
    assert "path 1: no fault" in out
    assert "Failure points:" in out
    assert ("`create_user` (attempt 1) fails after its effect (UnexpectedError) → compensates "
            "`create_user`; ends `compensated`") in out
    assert "no property broken on any path" in out


def test_simulate_json(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "upm_activation", "--format", "json", "--items", "2"]) == 0
    [saga] = json.loads(capsys.readouterr().out)["sagas"]
    assert saga["bounds"] == {"faults": 1, "items": 2}
    assert saga["paths"][0]["status"] == "completed"
    assert saga["worst_case_seconds"] > 0
    assert saga["violations"] == []
    assert all({"faults", "calls", "status", "left_in_place", "worst_case_seconds"} <= set(p)
               for p in saga["paths"])


def test_simulate_markdown_is_the_trackers_shape(
        in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "cerebros_nas", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "## cerebros_nas v1" in out
    assert "### FP-002: `dispatch_training`" in out
    assert "**File**: `definitions/sagas/cerebros_nas.yaml` (line 26)" in out
    assert "**Where**: external system `cerebros`" in out
    assert "| What fails | Compensates | Ends | Left behind | Worst case |" in out


def test_simulate_mermaid_draws_the_failure_map(
        in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "user_provisioning", "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD")
    assert "undo_create_user" in out
    assert "left in place: send_magic_link" in out
    assert "→ compensated" in out


def test_simulate_an_unknown_saga_is_a_usage_error(
        in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "nope"]) == 2
    assert "no saga 'nope'; known: cerebros_nas" in capsys.readouterr().err


def test_bad_definitions_give_validates_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n")
    for argv in (["prove", str(bad)], ["simulate", "broken", "--definitions", str(bad)],
                 ["validate", "--prove", str(bad)]):
        assert main(argv) == 1
        out = capsys.readouterr().out
        assert "missing-compensation" in out, argv
        assert "Traceback" not in out


def test_prove_the_shipped_tree(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove"]) == 0
    out = capsys.readouterr().out
    assert "0 broken properties in 3 saga(s)" in out
    assert "note prove-accepted-leftover user_provisioning.send_magic_link" in out
    assert "note prove-worst-case cerebros_nas v1: worst case 6h" in out


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_prove_reports_each_breach_located(
        fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove", *CORPUS_PATHS, "--format", fmt]) == 1
    out = capsys.readouterr().out
    where = "unrecorded_effect.yaml"
    if fmt == "text":
        assert f"{where}:10:5: error prove-no-silent-leftovers" in out
        assert "    counterexample: dispatch#1: fails after its effect (UnexpectedError)" in out
    elif fmt == "json":
        problems = json.loads(out)["problems"]
        [found] = [p for p in problems if p["file"].endswith(where)
                   and p["severity"] == "error"]
        assert (found["line"], found["code"]) == (10, "prove-no-silent-leftovers")
        assert found["counterexample"]["ends"] == "compensated"
    elif fmt == "sarif":
        results = json.loads(out)["runs"][0]["results"]
        assert any(r["ruleId"] == "prove-no-silent-leftovers" and r["locations"][0][
            "physicalLocation"]["region"]["startLine"] == 10 for r in results)
    else:
        assert f"::error file={CORPUS}/definitions/sagas/{where},line=10,col=5," in out


def test_validate_prove(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--prove"]) == 0
    assert main(["validate", "--prove", *CORPUS_PATHS]) == 1
    assert "prove-termination" in capsys.readouterr().out
    assert main(["validate", *CORPUS_PATHS]) == 0  # without --prove, only warnings


def test_simulate_and_prove_never_import_handlers(tmp_path: Path) -> None:
    # Even with a handlers module named in the environment, as the commands that do take
    # handlers read it (validate checks the bindings with it: that is its own job).
    env = {**os.environ, "CONCORDIA_HANDLERS": "tests.explore.exploding_handlers",
           "PYTHONPATH": str(ROOT)}
    script = ("import sys\nfrom concordia.cli import main\n"
              "codes = [main(['prove']), main(['simulate', 'cerebros_nas']),"
              " main(['simulate', 'upm_activation', '--format', 'mermaid'])]\n"
              "loaded = [m for m in sys.modules if m.startswith(('thunderline', 'tests'))]\n"
              "print('RESULT', codes, loaded)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert "RESULT [0, 0, 0] []" in done.stdout, done.stderr[-2000:]


def test_simulate_with_handlers_runs_every_path_on_the_engine(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "linear", "--definitions", *CONSTRUCT_PATHS,
                 "--handlers", "tests.explore.plain_handlers"]) == 0
    assert "linear: 19 paths ran on the engine as predicted" in capsys.readouterr().err


def test_against_a_directory_lists_the_changed_paths(
        in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    shutil.copytree(Path(ROOT) / "definitions", other / "definitions")
    shutil.copytree(Path(ROOT) / "policies", other / "policies")
    saga = other / "definitions" / "sagas" / "user_provisioning.yaml"
    saga.write_text(saga.read_text().replace(
        "    compensate: thunderblock.delete_vault\n    checkpoints: true\n",
        "    compensate: none\n    reason: vaults are swept nightly\n"))
    assert main(["simulate", "user_provisioning", "--against", str(other)]) == 1
    out = capsys.readouterr().out
    assert "compensation added: provision_vault" in out
    assert "leftover removed: provision_vault (reason: vaults are swept nightly)" in out
    assert main(["simulate", "user_provisioning", "--against", str(Path(ROOT))]) == 0
    assert "no path's outcome changed" in capsys.readouterr().out


def test_against_a_git_revision(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    if not (Path(ROOT) / ".git").exists():
        pytest.skip("not a git checkout")
    assert main(["simulate", "cerebros_nas", "--against", "HEAD", "--format", "json"]) in (
        0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["against"] == "HEAD"


def test_lint_finds_a_declared_checkpoint_the_handler_does_not_make(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "definitions" / "sagas").mkdir(parents=True)
    (tmp_path / "definitions" / "sagas" / "s.yaml").write_text(
        "name: s\nversion: 1\nsteps:\n"
        "  - name: charge\n    action: lintcp.charge\n    compensate: lintcp.refund\n"
        "    checkpoints: true\n"
        "  - name: ship\n    action: lintcp.ship\n    compensate: lintcp.unship\n"
        "    checkpoints: true\n")
    (tmp_path / "lintcp_handlers.py").write_text(
        "from concordia import Registry\nregistry = Registry()\n\n"
        "@registry.action('lintcp.charge')\ndef charge(ctx):\n    return {'id': ctx.input}\n\n"
        "@registry.action('lintcp.ship')\ndef ship(ctx):\n"
        "    ctx.checkpoint({'key': ctx.idempotency_key})\n    return {'id': 2}\n\n"
        "@registry.compensation('lintcp.refund')\ndef refund(ctx):\n"
        "    return {'refunded': ctx.result['id']}\n\n"
        "@registry.compensation('lintcp.unship')\ndef unship(ctx):\n"
        "    return {'unshipped': ctx.result}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["lint", "definitions", "--handlers", "lintcp_handlers"]) == 1
    out = capsys.readouterr().out
    assert "lintcp_handlers.py:4: error CP-NO-CHECKPOINT s.charge: step 'charge' declares " in out
    assert "s.ship" not in out


def test_the_failure_paths_of_the_reference_sagas_are_current(in_root: None) -> None:
    from concordia.explore.report import tree_markdown

    assert (Path(ROOT) / "docs" / "failure-paths.md").read_text("utf-8") == tree_markdown(
        ["definitions", "policies"]), (
        "docs/failure-paths.md is stale: python -m concordia.explore.report > "
        "docs/failure-paths.md")


def test_ci_and_the_pre_commit_hooks_prove_the_tree() -> None:
    import yaml

    ci = (Path(ROOT) / ".ci" / "run").read_text()
    lines = ci.splitlines()
    # CI proves the tree (a part that runs ``concordia prove``) before the test suite.
    assert any("concordia prove definitions policies" in line for line in lines)
    parts = [line for line in lines if line.startswith("part ")]
    proves = [i for i, line in enumerate(parts) if "concordia prove" in line]
    tests = [i for i, line in enumerate(parts) if line.endswith("./scripts/test")]
    assert proves
    assert tests
    assert proves[0] < tests[0]
    hooks = {h["id"]: h for h in yaml.safe_load((Path(ROOT) / ".pre-commit-hooks.yaml")
                                                 .read_text())}
    assert hooks["concordia-prove"]["entry"] == "concordia prove"
    assert hooks["concordia-prove"]["pass_filenames"] is False
