"""The catalog on the shipped tree and on a copy with the seed's kinds of mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

from concordia.cli import main
from concordia.definitions import Catalog
from tests.conftest import DEFINITIONS, POLICIES


def test_shipped_tree_is_clean() -> None:
    catalog = Catalog.load([DEFINITIONS, POLICIES])
    assert catalog.problems == []
    assert {name for name, _ in catalog.sagas} == {
        "user_provisioning", "upm_activation", "cerebros_nas"}
    for name in ("user.onboarding.complete", "ai.upm.snapshot.activated", "ml.run.completed"):
        assert catalog.has_event(name)
    assert catalog.policy("upm_activation").can_reject


def _broken_copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(DEFINITIONS, root / "definitions")
    shutil.copytree(POLICIES, root / "policies")
    nas = root / "definitions/sagas/cerebros_nas.yaml"
    nas.write_text(nas.read_text().replace("- event: ml.run.completed", "- event: ml.run.complete"))
    up = root / "definitions/sagas/user_provisioning.yaml"
    up.write_text(up.read_text().replace("    compensate: thunderlink.delete_user\n", "", 1))
    upm = root / "definitions/sagas/upm_activation.yaml"
    upm.write_text(upm.read_text().replace("version: 2\n", "version: 2\nversion: 3\n", 1))
    return root


def test_validate_names_all_three_gaps(tmp_path: Path, capsys: object) -> None:
    root = _broken_copy(tmp_path)
    code = main(["validate", str(root / "definitions"), str(root / "policies")])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 1
    assert "cerebros_nas.yaml:45:5: error unknown-event" in out
    assert "did you mean 'ml.run.completed'?" in out
    assert "user_provisioning.yaml:25:5: error missing-compensation" in out
    assert "upm_activation.yaml:4:1: error duplicate-key duplicate key 'version'" in out


def test_validate_clean_exit_zero() -> None:
    assert main(["validate", DEFINITIONS, POLICIES]) == 0


def test_on_failure_reading_a_result_unguarded_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(DEFINITIONS, root / "definitions")
    shutil.copytree(POLICIES, root / "policies")
    nas = root / "definitions/sagas/cerebros_nas.yaml"
    nas.write_text(nas.read_text().replace(
        '      run_id: "has(results.create_run) ? results.create_run.run_id : null"',
        "      run_id: results.create_run.run_id"))
    catalog = Catalog.load([str(root / "definitions"), str(root / "policies")])
    [problem] = catalog.problems
    assert problem.code == "unguarded-result"
    assert problem.severity == "warning"
    assert problem.pointer == "/on_failure/0/payload/run_id"
    assert problem.line > 0
    assert catalog.errors == []
