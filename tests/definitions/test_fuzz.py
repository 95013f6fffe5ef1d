"""Mutated definitions: the validator only ever returns located problems, never raises.

Each example takes one of the shipped YAML files and applies a few edits a person (or a
bad merge) might make: delete, duplicate or re-indent a line, swap characters, put another
type of value where a scalar was, insert a tab or a YAML sigil, cut the file short, or
break its encoding. The mutated file is parsed on its own and then validated together with
the rest of the shipped tree, so cross-reference checks see it too.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordia.definitions import Catalog, Problem
from concordia.definitions.documents import parse_bytes
from tests.conftest import DEFINITIONS, POLICIES

SHIPPED = sorted(
    str(p) for root in (DEFINITIONS, POLICIES) for p in Path(root).rglob("*.yaml"))
TEXTS = {path: Path(path).read_bytes() for path in SHIPPED}
# Problems about a file as a whole; every other problem must point at a line.
WHOLE_FILE_CODES = {"empty-file", "file-too-large", "no-definitions", "not-found", "unreadable"}
# Values of other types (and some YAML a definition must not contain) to put in place of
# a scalar.
REPLACEMENTS = [
    "42", "-1", "0", "3.5", "1e400", ".nan", "true", "null", "~", "''", "[]", "{}", "[1, 2]",
    "{a: 1}", "'results.nope.x'", "\"{{ input.x }}\"", "ml.run.complete", "none",
    "!!python/object:os.system {}", "!!binary aGk=", "*nowhere", "&anchor value",
    "<<: {a: 1}", "|\n  text", "2026-11-27", "5 minutes", "-30s", "Ä̈", "\"\\x00\"",
]
SIGILS = ["\t", ":", "- ", "[", "]", "{", "}", "&a ", "*a", "!", "|", ">", "#", "'", "\"",
          "%", "@", "`", "? ", "---\n", "...\n", "\x00", "\ufeff", "<<: "]
_SCALAR_RE = re.compile(rb"^(\s*(?:- )?[\w.\"]+:[ ]+)(\S.*)$")

Mutation = Callable[[bytes], bytes]


def _lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\n")


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from([
        "delete", "duplicate", "swap", "indent", "replace", "tab", "truncate", "insert",
        "bad_bytes",
    ]))
    index = draw(st.integers(min_value=0, max_value=10_000))
    if kind == "delete":
        def delete(raw: bytes) -> bytes:
            lines = _lines(raw)
            del lines[index % len(lines)]
            return b"\n".join(lines)
        return delete
    if kind == "duplicate":
        def duplicate(raw: bytes) -> bytes:
            lines = _lines(raw)
            i = index % len(lines)
            return b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1:]])
        return duplicate
    if kind == "swap":
        def swap(raw: bytes) -> bytes:
            if len(raw) < 2:
                return raw
            i = index % (len(raw) - 1)
            return raw[:i] + raw[i + 1: i + 2] + raw[i: i + 1] + raw[i + 2:]
        return swap
    if kind == "indent":
        shift = draw(st.sampled_from([-4, -2, -1, 1, 2, 3]))

        def indent(raw: bytes) -> bytes:
            lines = _lines(raw)
            i = index % len(lines)
            stripped = lines[i].lstrip(b" ")
            width = max(0, len(lines[i]) - len(stripped) + shift)
            lines[i] = b" " * width + stripped
            return b"\n".join(lines)
        return indent
    if kind == "replace":
        value = draw(st.sampled_from(REPLACEMENTS)).encode()

        def replace(raw: bytes) -> bytes:
            lines = _lines(raw)
            scalars = [i for i, line in enumerate(lines) if _SCALAR_RE.match(line)]
            if not scalars:
                return raw
            i = scalars[index % len(scalars)]
            lines[i] = _SCALAR_RE.sub(lambda m: m.group(1) + value, lines[i])
            return b"\n".join(lines)
        return replace
    if kind == "tab":
        def tab(raw: bytes) -> bytes:
            lines = _lines(raw)
            i = index % len(lines)
            lines[i] = b"\t" + lines[i]
            return b"\n".join(lines)
        return tab
    if kind == "truncate":
        def truncate(raw: bytes) -> bytes:
            return raw[: index % (len(raw) + 1)]
        return truncate
    if kind == "insert":
        text = draw(st.one_of(st.sampled_from(SIGILS), st.text(max_size=8))).encode()

        def insert(raw: bytes) -> bytes:
            i = index % (len(raw) + 1)
            return raw[:i] + text + raw[i:]
        return insert
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]))

    def bad_bytes(raw: bytes) -> bytes:
        i = index % (len(raw) + 1)
        return raw[:i] + bad + raw[i:]
    return bad_bytes


def _assert_located(problem: Problem, path: str, raw: bytes) -> None:
    assert problem.file, problem
    assert problem.message, problem
    if problem.code in WHOLE_FILE_CODES:
        return
    assert problem.line >= 1, problem.format_text()
    assert problem.column >= 1, problem.format_text()
    if problem.file == path:
        # The line must exist in the file it names (one past the end for "end of stream").
        # YAML also breaks lines at \r, \x85, \u2028 and \u2029; splitlines() counts those
        # and a few more, which is fine for an upper bound.
        lines = raw.decode("utf-8", "replace").splitlines()
        assert problem.line <= len(lines) + 2, problem.format_text()


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(SHIPPED), edits=st.lists(mutations(), min_size=1, max_size=3))
def test_mutated_definitions_yield_only_located_problems(
        source: str, edits: list[Mutation]) -> None:
    raw = TEXTS[source]
    for edit in edits:
        raw = edit(raw)
    name = Path(source).name

    parsed = parse_bytes(raw, name)
    for problem in parsed.problems:
        assert problem.file == name
        _assert_located(problem, name, raw)

    with tempfile.TemporaryDirectory() as tmp:
        mutated = str(Path(tmp) / name)
        Path(mutated).write_bytes(raw)
        others = [p for p in SHIPPED if p != source]
        catalog = Catalog.load([*others, mutated])
    for problem in catalog.problems:
        _assert_located(problem, mutated, raw)
    # The shipped tree is clean, so whatever is wrong is about the mutated file, or about
    # a shipped file that referred to something the mutation removed or renamed.
    if parsed.problems:
        assert any(p.file == mutated for p in catalog.problems)


def test_unmutated_shipped_files_parse_cleanly() -> None:
    for path, raw in TEXTS.items():
        parsed = parse_bytes(raw, path)
        assert parsed.problems == [], path
        assert parsed.sagas or parsed.events or parsed.policies
