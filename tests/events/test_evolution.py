"""Taxonomy evolution: every kind of change classified for producers and consumers, and
``concordia events check --against`` failing CI only on a breaking change to an existing
event version (against a directory and against a git revision)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from concordia.cli import main
from concordia.definitions.models import EventDef
from concordia.events.evolution import compare_events, compare_taxonomies


def event(fields: dict[str, Any], version: int = 1, reliability: str = "persistent"
          ) -> EventDef:
    return EventDef.model_validate({"name": "shop.order.paid", "version": version,
                                    "payload_schema": fields, "reliability": reliability})


BASE = {"order_id": {"type": "string", "required": True},
        "amount": {"type": "number", "required": True},
        "note": {"type": "string"},
        "status": {"type": "string", "enum": ["ok", "late"]},
        "lines": {"type": "list", "items": {"type": "map", "fields": {
            "sku": {"type": "string", "required": True},
            "qty": {"type": "number", "required": True}}}}}


def changed(**edits: Any) -> dict[str, Any]:
    fields = json.loads(json.dumps(BASE))
    for name, spec in edits.items():
        if spec is None:
            del fields[name]
        else:
            fields[name] = spec
    return fields


@pytest.mark.parametrize(("new", "path", "producers", "consumers"), [
    (changed(note=None), "note", True, True),  # removed (the schema is closed)
    (changed(coupon={"type": "string"}), "coupon", False, False),
    (changed(coupon={"type": "string", "required": True}), "coupon", True, False),
    (changed(note={"type": "string", "required": True}), "note", True, False),
    (changed(amount={"type": "number"}), "amount", False, True),
    (changed(amount={"type": "integer", "required": True}), "amount", True, False),
    (changed(order_id={"type": "number", "required": True}), "order_id", True, True),
    (changed(status={"type": "string", "enum": ["ok"]}), "status", True, False),
    (changed(status={"type": "string", "enum": ["ok", "late", "lost"]}), "status", False,
     True),
    (changed(status={"type": "string"}), "status", False, True),
    (changed(note={"type": "string", "maxLength": 10}), "note", True, False),
    (changed(note={"type": "string", "nullable": True}), "note", False, True),
    (changed(lines={"type": "list", "items": {"type": "map", "fields": {
        "sku": {"type": "string", "required": True},
        "qty": {"type": "integer", "required": True}}}}), "lines[].qty", True, False),
])
def test_each_kind_of_change_is_classified(new: dict[str, Any], path: str, producers: bool,
                                           consumers: bool) -> None:
    [change] = compare_events(event(BASE), event(new))
    assert (change.path, change.producers, change.consumers) == (path, producers, consumers)
    assert change.breaking == (producers or consumers)


def test_an_unchanged_event_has_no_changes_and_transient_reliability_breaks_consumers() -> None:
    assert compare_events(event(BASE), event(BASE)) == []
    [change] = compare_events(event(BASE), event(BASE, reliability="transient"))
    assert (change.producers, change.consumers) == (False, True)


def test_a_new_version_may_break_and_a_removed_version_does_break() -> None:
    old = {("shop.order.paid", 1): event(BASE)}
    new = {("shop.order.paid", 1): event(BASE),
           ("shop.order.paid", 2): event(changed(note=None), 2)}
    changes = compare_taxonomies(old, new)
    assert [c.breaking for c in changes] == [False, False]
    assert changes[1].what == "field removed"
    assert changes[1].new_version
    [removed] = compare_taxonomies(new, old)
    assert (removed.what, removed.breaking) == ("event version removed", True)


TAXONOMY = """
events:
  - name: shop.order.paid
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      amount: {type: number, required: true}
"""
SAGA = """
name: notify
version: 1
steps:
  - name: tell
    action: mail.send
    compensate: none
    reason: a notice
    emit:
      - event: shop.order.paid
        version: 1
        payload: {order_id: '"o-1"', amount: '1.5'}
"""


def write(root: Path, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["events", "check", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_against_a_directory_fails_on_a_breaking_change_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path / "old", **{"events.yaml": TAXONOMY, "notify.yaml": SAGA})
    new = write(tmp_path / "new", **{"events.yaml": TAXONOMY.replace(
        "amount: {type: number, required: true}",
        "amount: {type: number, required: true}\n      coupon: {type: string}"),
        "notify.yaml": SAGA})
    code, out = check(capsys, str(new), "--against", str(old))
    assert code == 0
    assert [(c["path"], c["breaking"]) for c in out["changes"]] == [("coupon", False)]
    (new / "events.yaml").write_text(textwrap.dedent(TAXONOMY).lstrip().replace(
        "type: number", "type: integer"))
    code, out = check(capsys, str(new), "--against", str(old))
    assert code == 1
    [change] = out["changes"]
    assert (change["path"], change["breaks_producers"], change["breaks_consumers"]) == (
        "amount", True, False)


def test_check_against_a_git_revision_allows_a_new_version_and_keeps_pinned_sagas_valid(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    defs = write(repo / "definitions", **{"events.yaml": TAXONOMY, "notify.yaml": SAGA})

    def git(*argv: str) -> None:
        subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci",
                        *argv], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "taxonomy v1")
    # Version 2 drops a field (it may: it is a new version); the saga pinned to v1 still
    # validates against v1, which stays.
    (defs / "events.yaml").write_text(textwrap.dedent(TAXONOMY).lstrip() + (
        "  - name: shop.order.paid\n"
        "    version: 2\n"
        "    reliability: persistent\n"
        "    payload_schema:\n"
        "      order_id: {type: string, required: true}\n"))
    code, out = check(capsys, str(defs), "--against", "HEAD")
    assert code == 0, out
    assert out["problems"] == []
    assert [(c["version"], c["change"], c["breaking"]) for c in out["changes"]] == [
        (2, "new version of v1", False), (2, "field removed", False)]
    # Dropping v1 itself, which the saga emits, is breaking twice over.
    (defs / "events.yaml").write_text(textwrap.dedent(TAXONOMY).lstrip().replace(
        "version: 1", "version: 2"))
    code, out = check(capsys, str(defs), "--against", "HEAD")
    assert code == 1
    assert any(c["change"] == "event version removed" and c["breaking"]
               for c in out["changes"])
    assert out["problems"], "the saga that emits v1 no longer validates"


def test_an_unknown_revision_is_a_usage_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    defs = write(tmp_path / "d", **{"events.yaml": TAXONOMY})
    assert main(["events", "check", str(defs), "--against", "no-such-ref"]) == 2
    assert "not in a git repository" in capsys.readouterr().err
