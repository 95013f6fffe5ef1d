"""CEL calls are checked when a definition is validated, not when a run evaluates them.

The allow-list must be honest both ways: every name on it runs in the evaluator, and a
name the evaluator lacks is refused with the file and line of the expression.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from concordia.definitions import Catalog
from concordia.definitions.celcheck import FUNCTIONS, OPERATORS, bound_names
from concordia.definitions.expressions import compile_expression

# One expression per allowed name, evaluated for real below.
CALLS = {
    "size": "size('ab') == 2", "int": "int('3') == 3", "uint": "uint(3) == uint(3)",
    "double": "double(1) == 1.0", "string": "string(1) == '1'", "bytes": "bytes('a') == b'a'",
    "type": "type(1) == int", "dyn": "dyn(1) == 1",
    "timestamp": "timestamp('2026-01-01T00:00:00Z') < timestamp('2027-01-01T00:00:00Z')",
    "duration": "duration('1h') > duration('1m')",
    "matches": "'abc'.matches('^a')", "startsWith": "'abc'.startsWith('a')",
    "endsWith": "'abc'.endsWith('c')", "contains": "'abc'.contains('b')",
    "getFullYear": "timestamp('2026-01-01T00:00:00Z').getFullYear() == 2026",
    "getMonth": "timestamp('2026-01-01T00:00:00Z').getMonth() == 0",
    "getDate": "timestamp('2026-01-01T00:00:00Z').getDate() == 1",
    "getDayOfMonth": "timestamp('2026-01-01T00:00:00Z').getDayOfMonth() == 0",
    "getDayOfWeek": "timestamp('2026-01-01T00:00:00Z').getDayOfWeek() == 4",
    "getDayOfYear": "timestamp('2026-01-01T00:00:00Z').getDayOfYear() == 0",
    "getHours": "duration('2h').getHours() == 2",
    "getMinutes": "duration('2h').getMinutes() == 120",
    "getSeconds": "duration('1m').getSeconds() == 60",
    "getMilliseconds": "duration('1s').getMilliseconds() == 1000",
}
OPERATOR_USES = ("-(1 + 2 - 3 * 4 / 2 % 5) != 0 && !(1 == 2) || 1 < 2 && 1 <= 2 && 2 > 1"
                 " && 2 >= 1 && [1][0] in [1] && (true ? 1 : 2) == 1"
                 " && [1, 2].all(x, x > 0) && [1].exists(x, x > 0)")


def test_every_allowed_function_runs_in_the_evaluator() -> None:
    assert set(CALLS) == FUNCTIONS
    for name, source in CALLS.items():
        expr = compile_expression(source)
        assert name in expr.functions, source
        assert expr.evaluate({}) is True, source


def test_every_allowed_operator_is_what_the_library_reports() -> None:
    expr = compile_expression(OPERATOR_USES)
    assert expr.functions == OPERATORS
    assert expr.evaluate({}) is True


SAGA = """\
name: s
version: 1
steps:
  - name: wait
    await: user.account.created
    timeout: 1h
    match: {match}
"""


@pytest.mark.parametrize(("expression", "name"), [
    ("\"__import__('os').system('ls') == 0\"", "__import__"),
    ("\"system('x') == 0\"", "system"),
    ("\"exec('x')\"", "exec"),
    ("\"[1].sortBy(x, x) == [1]\"", "sortBy"),
    ("\"bool('true')\"", "bool"),
    ("\"event.data.email.lowerAscii() == 'a'\"", "lowerAscii"),
])
def test_unknown_functions_and_macros_are_located_errors(tmp_path: Path, expression: str,
                                                         name: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SAGA.format(match=expression))
    events = str(Path(__file__).parents[2] / "definitions" / "events")
    problems = list(Catalog.load([str(path), events]).problems)
    unknown = [p for p in problems if p.code == "unknown-function"]
    assert unknown, problems
    assert {(p.line, p.column, p.pointer) for p in unknown} == {(7, 5, "/steps/0/match")}
    assert any(repr(name) in p.message for p in unknown)
    assert unknown[0].hint is not None
    assert "startsWith" in unknown[0].hint


def test_allowed_calls_and_macro_variables_pass(tmp_path: Path) -> None:
    match = ("\"event.data.email.endsWith('@x.io') && size(event.data.email) > 3"
             " && [event.data.user_id].exists(u, u == results.start.id)\"")
    path = tmp_path / "s.yaml"
    path.write_text(SAGA.replace("steps:\n", "steps:\n  - name: start\n    action: x.start\n"
                                 "    compensate: none\n    reason: r\n").format(match=match))
    events = str(Path(__file__).parents[2] / "definitions" / "events")
    assert Catalog.load([str(path), events]).problems == []


def test_bound_names_ignore_text_inside_strings() -> None:
    assert bound_names("xs.all(a, a > 1) && ys.map(b, b) == [] && 'zs.exists(c, c)' != ''") == {
        "a", "b"}
