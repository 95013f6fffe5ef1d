"""The corpus of bad definitions: each file yields exactly its expected located problem.

``bad/expected.yaml`` names, for every file next to it, the problem code, the line (0 for
a whole-file problem), a message substring and, where the validator suggests a fix, a hint
substring. Cases that refer to shipped events or policies are validated together with the
shipped ``definitions/`` and ``policies/`` trees, which contribute no problem of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from concordia.cli import main
from concordia.definitions import Catalog
from concordia.definitions.yamlsafe import MAX_BYTES
from tests.conftest import DEFINITIONS, POLICIES

BAD = Path(__file__).parent / "bad"
EXPECTED_FILE = BAD / "expected.yaml"
CASES: dict[str, dict[str, Any]] = yaml.safe_load(EXPECTED_FILE.read_text("utf-8"))
# Problems that concern a file as a whole and so carry no line.
WHOLE_FILE_CODES = {"empty-file", "file-too-large", "no-definitions", "not-found", "unreadable"}


def _paths(name: str) -> list[str]:
    path = str(BAD / name)
    return [DEFINITIONS, POLICIES, path] if CASES[name].get("with_shipped") else [path]


def _describe(catalog: Catalog) -> str:
    return "\n".join(p.format_text() for p in catalog.problems) or "(no problems)"


def test_corpus_is_large_and_every_file_has_an_expectation() -> None:
    files = {p.name for p in BAD.iterdir() if p.name != EXPECTED_FILE.name}
    assert files == set(CASES), "bad/ and bad/expected.yaml disagree"
    assert len(CASES) >= 45
    # The expectations themselves must be usable: a known shape, and a line only where
    # the problem is not about the whole file.
    for name, case in CASES.items():
        assert set(case) <= {"code", "line", "message", "hint", "with_shipped"}, name
        assert (case["line"] == 0) == (case["code"] in WHOLE_FILE_CODES), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_definition_yields_its_one_located_problem(name: str) -> None:
    case = CASES[name]
    catalog = Catalog.load(_paths(name))
    assert len(catalog.problems) == 1, _describe(catalog)
    problem = catalog.problems[0]
    assert problem.file == str(BAD / name)
    assert problem.severity == "error"
    assert problem.code == case["code"], _describe(catalog)
    assert problem.line == case["line"], _describe(catalog)
    if problem.line:
        assert problem.column >= 1
    assert case["message"] in problem.message, _describe(catalog)
    if "hint" in case:
        assert problem.hint is not None
        assert case["hint"] in problem.hint, _describe(catalog)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_reports_bad_definition_and_exits_one(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", *_paths(name), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    assert [(p["file"], p["code"], p["line"]) for p in report["problems"]] == [
        (str(BAD / name), CASES[name]["code"], CASES[name]["line"])]


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    # Generated rather than committed: a valid saga padded past the limit with a comment.
    path = tmp_path / "huge.yaml"
    saga = (b"name: huge\nversion: 1\nsteps:\n  - name: charge\n    action: billing.charge\n"
            b"    compensate: billing.refund\n")
    path.write_bytes(saga + b"# " + b"x" * (3 * MAX_BYTES) + b"\n")
    catalog = Catalog.load([str(path)])
    assert [(p.file, p.code, p.line) for p in catalog.problems] == [
        (str(path), "file-too-large", 0)]
    # The file's real size, not the bytes read before giving up on it.
    size = path.stat().st_size
    assert catalog.problems[0].message == (
        f"file is {size:,} bytes; the limit is {MAX_BYTES:,}")


def test_file_just_under_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    saga = (b"name: big\nversion: 1\nsteps:\n  - name: charge\n    action: billing.charge\n"
            b"    compensate: billing.refund\n")
    path.write_bytes(saga + b"# " + b"x" * (MAX_BYTES - len(saga) - 3) + b"\n")
    assert path.stat().st_size == MAX_BYTES
    catalog = Catalog.load([str(path)])
    assert catalog.problems == []
    assert ("big", 1) in catalog.sagas


def test_directory_without_definitions(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "README.md").write_text("no YAML here\n")
    (other / ".hidden.yaml").write_text("name: hidden\n")
    catalog = Catalog.load([str(empty), str(other)])
    assert [(p.file, p.code) for p in catalog.problems] == [
        (str(empty), "no-definitions"), (str(other), "no-definitions")]
    assert main(["validate", str(empty)]) == 1
    assert f"{empty}: error no-definitions" in capsys.readouterr().out


def test_missing_path_is_reported(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    catalog = Catalog.load([missing])
    assert [(p.file, p.code, p.line) for p in catalog.problems] == [(missing, "not-found", 0)]


def test_whole_corpus_in_one_pass() -> None:
    """Loading every bad file at once reports each of them; nothing stops at the first."""
    files = [str(BAD / name) for name in sorted(CASES)]
    catalog = Catalog.load([DEFINITIONS, POLICIES, *files])
    assert {p.file for p in catalog.problems} == set(files)
    for problem in catalog.problems:
        assert problem.line >= 1 or problem.code in WHOLE_FILE_CODES, problem.format_text()


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    """`definitions` and `./definitions` (or a directory and a file in it) are one tree,
    not a tree that duplicates every name."""
    saga = Path(DEFINITIONS, "sagas", "cerebros_nas.yaml")
    link = tmp_path / "linked.yaml"
    link.symlink_to(saga)
    catalog = Catalog.load([str(saga), DEFINITIONS, DEFINITIONS + "/./", POLICIES,
                            str(link)])
    assert catalog.problems == []
    assert next(iter(catalog.files)) == str(saga)  # under the first spelling given
    every = [*Path(DEFINITIONS).rglob("*.yaml"), *Path(POLICIES).rglob("*.yaml")]
    assert len(catalog.files) == len(every)


def test_each_missing_key_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "thin.yaml"
    path.write_text("kind: events\nevents:\n  - name: shop.order.created\n")
    catalog = Catalog.load([str(path)])
    assert [(p.code, p.line, p.message) for p in catalog.problems] == [
        ("missing-key", 3, f"`events.0` is missing required key {key!r}")
        for key in ("version", "payload_schema", "reliability")]
