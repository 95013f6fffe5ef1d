"""Validation stays bounded in time and memory, and never reads what is not a plain file.

Each hostile input is one a CI job could be handed by a pull request: an anchored string
reused by thousands of aliases, a FIFO or a device named ``*.yaml``, an integer of
thousands of digits, values that would be quoted whole in every message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from concordia.cli import main
from concordia.definitions import Catalog
from tests.conftest import ROOT

SAGA_HEAD = "name: big\nversion: 1\n"
STEP = ("steps:\n  - name: a\n    action: x.a\n    compensate: none\n"
        "    reason: nothing to undo\n")


def _alias_bomb(path: Path, size: int = 900_000, aliases: int = 2_000) -> None:
    lines = [SAGA_HEAD + f"description: &big {'x' * size}", STEP.rstrip("\n"), "on_complete:"]
    lines += ["  - {event: *big}"] * aliases
    path.write_text("\n".join(lines) + "\n")


def test_alias_bomb_of_a_large_string_is_refused_fast_and_small(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    _alias_bomb(bomb)
    assert bomb.stat().st_size < 1_000_000  # under the file limit: the aliases are the attack
    tracemalloc.start()
    started = time.perf_counter()
    try:
        catalog = Catalog.load([str(bomb)])
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    [problem] = catalog.problems
    assert problem.code == "too-many-nodes"
    assert "characters of text" in problem.message
    assert problem.line >= 1
    assert len(problem.format_text()) < 400


def test_alias_bomb_through_the_cli_in_a_fresh_process(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    _alias_bomb(bomb)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "concordia.cli", "validate", str(bomb)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT})
    elapsed = time.perf_counter() - started
    assert done.returncode == 1
    assert "too-many-nodes" in done.stdout
    assert "Traceback" not in done.stderr
    assert elapsed < 5.0  # interpreter start-up included


def test_modest_reuse_of_anchored_text_still_loads(tmp_path: Path) -> None:
    # 50 steps sharing one 10,000-character description: 500,000 characters expanded.
    steps = "".join(f"  - name: s{i}\n    action: x.a\n    compensate: none\n"
                    f"    reason: nothing to undo\n    description: *d\n" for i in range(50))
    path = tmp_path / "reuse.yaml"
    path.write_text(SAGA_HEAD + "description: &d " + "y" * 10_000 + "\nsteps:\n" + steps)
    catalog = Catalog.load([str(path)])
    assert catalog.problems == []
    assert len(catalog.saga("big").steps) == 50


def test_a_five_thousand_digit_integer_is_a_located_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text(SAGA_HEAD.replace("version: 1", "version: " + "9" * 5_000) + STEP)
    code = main(["validate", str(path), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    [problem] = json.loads(captured.out)["problems"]
    assert (problem["code"], problem["line"], problem["column"]) == ("bad-number", 2, 10)
    assert "5000 digits" in problem["message"]
    assert len(problem["message"]) < 200


@pytest.mark.parametrize(("value", "ok"), [
    (".nan", False), (".inf", False), ("-.inf", False), ("1.0e+400", False),
    (str(2**53 - 1), True), (str(2**53), False), (str(-(2**53)), False), ("0x1f", True),
])
def test_numbers_that_json_cannot_carry_are_refused(tmp_path: Path, value: str,
                                                    ok: bool) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("name: shop.order.created\nversion: 1\nreliability: persistent\n"
                    f"payload_schema:\n  total: {{type: number, maximum: {value}}}\n")
    problems = Catalog.load([str(path)]).problems
    if ok:
        assert problems == []
    else:
        [problem] = problems
        assert (problem.code, problem.line, problem.column) == ("bad-number", 5, 34)


def test_a_fifo_is_skipped_with_a_warning_and_never_opened_for_reading(tmp_path: Path) -> None:
    tree = tmp_path / "definitions"
    tree.mkdir()
    (tree / "ok.yaml").write_text(SAGA_HEAD + STEP)
    os.mkfifo(tree / "pipe.yaml")
    (tree / "zero.yaml").symlink_to("/dev/zero")
    # A fresh process with a deadline: reading either file would block or never end.
    done = subprocess.run([sys.executable, "-m", "concordia.cli", "validate", str(tree),
                           str(tree / "pipe.yaml"), "--format", "json"],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert sorted((Path(p["file"]).name, p["severity"], p["code"]) for p in problems) == [
        ("pipe.yaml", "warning", "not-a-regular-file"),
        ("zero.yaml", "warning", "not-a-regular-file")]
    assert "FIFO" in next(p["message"] for p in problems if p["file"].endswith("pipe.yaml"))


def test_messages_quote_long_values_by_a_short_prefix(tmp_path: Path) -> None:
    long = "z" * 300_000
    path = tmp_path / "long.yaml"
    path.write_text(SAGA_HEAD + f"kind: {long}\n? {long}\n: 1\n" + STEP
                    + f"on_complete:\n  - event: {long}\n")
    catalog = Catalog.load([str(path)])
    assert {p.code for p in catalog.problems} >= {"bad-value", "unknown-key"}
    for problem in catalog.problems:
        assert len(problem.format_text()) < 600, problem.format_text()[:200]


@pytest.mark.parametrize(("where", "value", "pointer"), [
    ("step", "1.0e+300", "/steps/0/timeout"),
    ("step", "100000d", "/steps/0/timeout"),
    ("defaults", "366d", "/defaults/timeout"),
    ("backoff", "400d", "/steps/0/retry/backoff/max"),
])
def test_absurd_durations_are_refused_where_they_are(tmp_path: Path, where: str, value: str,
                                                     pointer: str) -> None:
    step = STEP
    head = SAGA_HEAD
    if where == "step":
        step += f"    timeout: {value}\n"
    elif where == "defaults":
        head += f"defaults: {{timeout: {value}}}\n"
    else:
        step += f"    retry: {{attempts: 2, backoff: {{max: {value}}}}}\n"
    path = tmp_path / "d.yaml"
    path.write_text(head + step)
    [problem] = Catalog.load([str(path)]).problems
    assert (problem.code, problem.pointer) == ("bad-duration", pointer)
    assert "365 days" in problem.message
    assert problem.line > 0


def test_a_year_is_the_longest_duration(tmp_path: Path) -> None:
    path = tmp_path / "y.yaml"
    path.write_text(SAGA_HEAD + STEP + "    timeout: 365d\n")
    assert Catalog.load([str(path)]).problems == []


@pytest.mark.parametrize("version", [2**31, 2**40])
def test_versions_beyond_two_to_the_31_are_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(SAGA_HEAD.replace("version: 1", f"version: {version}") + STEP)
    [problem] = Catalog.load([str(path)]).problems
    assert (problem.pointer, problem.line) == ("/version", 2)
    assert "2147483647" in problem.message


def test_backoff_factor_is_bounded(tmp_path: Path) -> None:
    # initial * factor ** 99 must stay a float: a factor of 1e300 overflows at attempt 3.
    path = tmp_path / "f.yaml"
    path.write_text(SAGA_HEAD + STEP + "    retry: {attempts: 5, backoff: {factor: 1e300}}\n")
    [problem] = Catalog.load([str(path)]).problems
    assert problem.pointer == "/steps/0/retry/backoff/factor"


@pytest.mark.parametrize(("ref", "ok"), [
    ("#/$defs/money", True), ("http://example.com/schema.json", False),
    ("file:///etc/passwd", False), ("other.json#/x", False),
])
def test_payload_schema_refs_stay_inside_the_document(tmp_path: Path, ref: str,
                                                      ok: bool) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(
        "name: shop.order.created\nversion: 1\nreliability: persistent\npayload_schema:\n"
        "  type: object\n  $defs:\n    money: {type: number}\n  properties:\n"
        f"    total: {{$ref: '{ref}'}}\n")
    catalog = Catalog.load([str(path)])
    if ok:
        assert catalog.problems == []
        assert catalog.has_event("shop.order.created")
        return
    [problem] = catalog.problems
    assert (problem.code, problem.line) == ("external-ref", 9)
    assert problem.pointer == "/payload_schema/properties/total/$ref"
    assert not catalog.has_event("shop.order.created")
