"""Expressions are bounded: costly ones run in a sandbox with budgets, deep contexts are refused.

The bombs run in a fresh interpreter (``run_bomb``) that caps its own address space
before it starts, and under a timeout: should a bound under test fail, the bomb still
stops by itself (killed, or refused memory) instead of taking the machine or the test
run with it. The scenario measures its own time and peak RSS growth and reports them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import cel
import pytest

from concordia import sandbox
from concordia.definitions import Catalog
from concordia.definitions.expressions import (
    _MACROS,
    compile_expression,
    render_template,
)
from concordia.errors import ExpressionError
from concordia.values import DEFAULT_LIMITS, get_limits, set_limits
from tests.conftest import DEFINITIONS, POLICIES, ROOT

MAX_SECONDS = 10.0
MAX_RSS_GROWTH_MB = 200


def doubling(levels: int = 40) -> str:
    """A string doubled ``levels`` times: 2**levels copies of ``input.s``."""
    source = "input.s"
    for _ in range(levels):
        source = f"[{source}].map(x, x + x)[0]"
    return source


NESTED_MAP = "input.a.map(x, input.a.map(y, input.a.map(z, x + y + z))).size() > 0"

_RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    # The safety net, should the bounds under test fail: 1.5 GiB of address space.
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    from concordia.definitions.expressions import compile_expression
    compile_expression("1 + 1").evaluate({})  # the library loaded before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        result = repr(scenario())
        error = None
    except Exception as exc:
        result, error = None, [type(exc).__name__, str(exc)]
    print(json.dumps({
        "seconds": time.monotonic() - started,
        "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
        "result": result, "error": error}))
""")


def run_bomb(scenario: str) -> dict[str, Any]:
    """Run ``scenario`` (the body of a function) in a bounded interpreter; its report."""
    code = "def scenario():\n" + textwrap.indent(textwrap.dedent(scenario), "    ") + _RUNNER
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["seconds"] < MAX_SECONDS, report
    assert report["rss_growth_mb"] < MAX_RSS_GROWTH_MB, report
    return report


def error_of(report: dict[str, Any]) -> tuple[str, str]:
    assert report["error"] is not None, report
    kind, message = report["error"]
    return kind, message


# -- the bombs


def test_nested_map_over_input_stops_at_the_time_budget() -> None:
    report = run_bomb(f"""
        from concordia.definitions.expressions import compile_expression
        expr = compile_expression({NESTED_MAP!r})
        assert not expr.in_process
        return expr.evaluate({{"input": {{"a": list(range(1000))}}}})
    """)
    kind, message = error_of(report)
    assert kind == "ExpressionError"
    assert message.endswith("exceeded its time budget of 1s")
    assert report["seconds"] >= 0.9


def _policy_bomb(when: str, reason: str) -> str:
    # Doubling reaches the memory budget in ~0.7 s on an idle machine: a longer time
    # budget makes sure that memory, not time, is what stops it on a busy one.
    return f"""
        from concordia.definitions import Policy
        from concordia.policies import evaluate_policy
        from concordia.values import set_limits
        set_limits(expression_time=5)
        policy = Policy.model_validate({{
            "name": "bomb", "version": 1,
            "input_schema": {{"s": {{"type": "string", "required": True}}}},
            "rules": [{{"name": "grow", "when": {when!r}, "decision": "reject",
                        "reason": {reason!r}}}],
            "default": {{"decision": "approve", "reason": "fine"}},
        }})
        return evaluate_policy(policy, {{"s": "ab"}})
    """


def test_string_doubling_in_a_policy_condition_stops_at_the_memory_budget() -> None:
    report = run_bomb(_policy_bomb(f"size({doubling()}) > 0", "grew"))
    kind, message = error_of(report)
    assert kind == "PolicyError"
    assert message.startswith("policy 'bomb': rule 'grow' cannot be evaluated: ")
    assert message.endswith("exceeded its memory budget of 512 MiB")


def test_string_doubling_in_a_policy_reason_stops_at_the_memory_budget() -> None:
    report = run_bomb(_policy_bomb("true", "grew to {{ " + doubling() + " }}"))
    kind, message = error_of(report)
    assert kind == "PolicyError"
    assert message.startswith("policy 'bomb': reason of rule 'grow' cannot be filled: ")
    assert message.endswith("exceeded its memory budget of 512 MiB")


def test_a_result_too_large_to_return_is_refused_in_the_sandbox() -> None:
    # 2**22 copies of "ab": 8 MiB, within the memory budget but not the result limit.
    report = run_bomb(f"""
        from concordia.definitions.expressions import compile_expression
        return compile_expression({doubling(22)!r}).evaluate({{"input": {{"s": "ab"}}}})
    """)
    kind, message = error_of(report)
    assert kind == "ExpressionError"
    assert message.endswith("its result exceeds the limits: string of 8388608 characters "
                            "exceeds 262144")


DEEP_EVENT = """
    data = {"run_id": "r-1"}
    for _ in range(10_000):
        data = {"nested": data}
    event = {"data": data}
"""


def test_a_10000_deep_event_is_refused_before_the_library_sees_it() -> None:
    report = run_bomb(DEEP_EVENT + """
    from concordia.definitions.expressions import compile_expression
    return compile_expression("event.data.nested.run_id == 'r-1'").evaluate({"event": event})
    """)
    assert error_of(report) == (
        "ExpressionError",
        "expression \"event.data.nested.run_id == 'r-1'\": its context is nested deeper "
        "than 72 levels")


def test_a_10000_deep_event_gives_no_match_key_and_no_crash() -> None:
    report = run_bomb(DEEP_EVENT + """
    from concordia.runtime.matching import compile_match
    spec = compile_match("event.data.run_id == results.create_run.run_id")
    assert spec.event_side is not None
    return spec.event_key({"event": event})
    """)
    assert report["error"] is None
    assert report["result"] == "None"  # not indexable: the event simply matches no await


def test_a_10000_deep_event_is_refused_for_a_sandboxed_expression_too() -> None:
    report = run_bomb(DEEP_EVENT + """
    from concordia.definitions.expressions import compile_expression
    return compile_expression("[event].exists(e, e.data == 1)").evaluate({"event": event})
    """)
    kind, message = error_of(report)
    assert kind == "ExpressionError"
    assert message.endswith("its context is nested deeper than 72 levels")


# -- where each expression is evaluated


@pytest.mark.parametrize("source", [
    "input.drift_score > 0.3", "!input.shadow_validated", "input.adapter_count == 0",
    "event.data.run_id == results.create_run.run_id", "has(input.a) && input.a != ''",
    "size(input.items) > 2 && input.name.startsWith('x')", "input.a in ['x', 'y']",
    "input.when < timestamp('2026-01-01T00:00:00Z')", "input.a + '-' + input.b",
    "input.email.matches('^[^@]+@[^@]+$')",
])
def test_linear_expressions_run_in_process(source: str) -> None:
    assert compile_expression(source).in_process


@pytest.mark.parametrize("source", [
    "input.a.map(x, x * 2)", "input.a.filter(x, x > 1)", "input.a.all(x, x > 0)",
    "input.a.exists(x, x > 0)", "input.a.exists_one(x, x > 0)", "input.a . map (x, x)",
    # A field or a string that mentions a macro's name: false alarms, and safe ones.
    "input.map == 1", "'has a map in a string' == input.s",
    "input.s.reverse()",  # not a function of the library today; cost unknown
    " + ".join(["input.s"] * 10),
    " && ".join(["input.b"] * 40),
])
def test_other_expressions_run_in_the_sandbox(source: str) -> None:
    assert not compile_expression(source).in_process


def test_every_shipped_expression_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from concordia.definitions import expressions

    compiled: list[expressions.Expression] = []
    original = expressions.Expression.__init__

    def record(self: expressions.Expression, source: str) -> None:
        original(self, source)
        compiled.append(self)

    monkeypatch.setattr(expressions.Expression, "__init__", record)
    expressions.compile_expression.cache_clear()
    try:
        assert Catalog.load([DEFINITIONS, POLICIES]).errors == []
    finally:
        expressions.compile_expression.cache_clear()
    assert len(compiled) > 10
    assert [e.source for e in compiled if not e.in_process] == []


@pytest.mark.parametrize("name", [
    "all", "exists", "exists_one", "existsOne", "map", "filter", "transformList",
    "transformMap", "transformMapEntry", "sortBy", "bind", "block", "optMap", "optFlatMap",
    "fold", "reduce", "sum", "count", "any", "none", "flatMap", "each", "select",
])
def test_every_macro_of_the_library_is_known(name: str) -> None:
    # A macro is expanded by the parser, so its name is not among the functions called.
    # Should a later version of the library add one, it must send its expressions to
    # the sandbox.
    try:
        functions = cel.compile(f"[1].{name}(x, x)").functions()
    except ValueError:
        return  # not even parsed: no macro
    if name not in functions:
        assert name in _MACROS


# -- the same answers on both paths


CONTEXT = {"input": {"a": 4, "s": "ab", "items": [1, 2, 3]}}


@pytest.mark.parametrize(("in_process", "sandboxed"), [
    ("input.a + 1", "[input.a].map(x, x + 1)[0]"),
    ("input.s + input.s", "[input.s].map(x, x + x)[0]"),
    ("{'n': input.items}", "[{'n': input.items}].map(x, x)[0]"),
    ("timestamp('2026-01-01T00:00:00Z')", "[timestamp('2026-01-01T00:00:00Z')].map(x, x)[0]"),
    ("b'ab'", "[b'ab'].map(x, x)[0]"),
])
def test_both_paths_give_the_same_values(in_process: str, sandboxed: str) -> None:
    fast, slow = compile_expression(in_process), compile_expression(sandboxed)
    assert fast.in_process
    assert not slow.in_process
    assert fast.evaluate(CONTEXT) == slow.evaluate(CONTEXT)


@pytest.mark.parametrize(("in_process", "sandboxed", "reason"), [
    ("input.nope", "[1].map(x, input.nope)[0]", "no such field 'nope'"),
    ("input.a / 0", "[1].map(x, input.a / 0)[0]", "division by zero"),
    ("input.a + 'x'", "[1].map(x, input.a + 'x')[0]", "No such overload"),
    ("9223372036854775807 + input.a", "[1].map(x, 9223372036854775807 + input.a)[0]",
     "overflow"),
])
def test_both_paths_fail_the_same_way(in_process: str, sandboxed: str, reason: str) -> None:
    messages = []
    for source in (in_process, sandboxed):
        with pytest.raises(ExpressionError, match=reason) as caught:
            compile_expression(source).evaluate(CONTEXT)
        messages.append(str(caught.value).split(": ", 1)[1])
    assert messages[0] == messages[1]


# -- the sandbox's life


@pytest.fixture
def short_budget() -> Iterator[None]:
    set_limits(expression_time=0.3)
    try:
        yield
    finally:
        set_limits(DEFAULT_LIMITS)


def test_the_sandbox_recovers_after_a_child_is_killed(short_budget: None) -> None:
    bomb = compile_expression(NESTED_MAP)
    with pytest.raises(ExpressionError, match=r"exceeded its time budget of 0\.3s"):
        bomb.evaluate({"input": {"a": list(range(1000))}})
    doubled = compile_expression("input.a.map(x, x * 2)")
    assert doubled.evaluate({"input": {"a": [1, 2]}}) == [2, 4]


def test_a_child_killed_from_outside_is_replaced() -> None:
    expr = compile_expression("input.a.map(x, x + 1)")
    assert expr.evaluate({"input": {"a": [1]}}) == [2]
    for pid in sandbox.process_ids():
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    assert expr.evaluate({"input": {"a": [2]}}) == [3]


def test_a_child_that_crashes_mid_evaluation_is_named_and_replaced() -> None:
    bomb = compile_expression(NESTED_MAP)
    failures: list[ExpressionError] = []

    def evaluate() -> None:
        try:
            bomb.evaluate({"input": {"a": list(range(1000))}})
        except ExpressionError as exc:
            failures.append(exc)

    set_limits(expression_time=20)
    try:
        compile_expression("[1].map(x, x)").evaluate({})  # a child ready and idle
        worker = threading.Thread(target=evaluate)
        worker.start()
        deadline = time.monotonic() + 30
        while worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.3)  # the evaluation under way; a child killed idle is replaced
            for pid in sandbox.process_ids():
                with contextlib.suppress(ProcessLookupError):  # already gone
                    os.kill(pid, signal.SIGSEGV)
            worker.join(timeout=1)
    finally:
        set_limits(DEFAULT_LIMITS)
    assert len(failures) == 1
    assert str(failures[0]).endswith("stopped the expression sandbox (signal SIGSEGV)")
    assert compile_expression("[3].map(x, x)").evaluate({}) == [3]


def test_a_sandbox_that_cannot_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not an interpreter: the shell refuses Python's -P option and says so on stderr.
    monkeypatch.setattr(sys, "executable", "/bin/sh")
    try:
        set_limits(expression_memory=300 << 20)  # a new pool, so a new child is started
        with pytest.raises(ExpressionError, match=r"the expression sandbox could not start: "
                                                  r".*[Ii]llegal option"):
            compile_expression("[1].map(x, x)").evaluate({})
    finally:
        set_limits(DEFAULT_LIMITS)
    monkeypatch.undo()
    assert compile_expression("[1].map(x, x)").evaluate({}) == [1]


def test_the_parent_unpickles_nothing_but_result_types() -> None:
    import pickle

    with pytest.raises(pickle.UnpicklingError, match=r"may not send posix\.system"):
        sandbox._loads(pickle.dumps(("ok", os.system)))
    when = cel.compile("timestamp('2026-01-01T10:00:00+02:00')").execute({})
    assert sandbox._loads(pickle.dumps(("ok", [when, b"x", {"d": when - when}]))) == (
        "ok", [when, b"x", {"d": when - when}])


def test_concurrent_evaluations_share_a_bounded_pool() -> None:
    expr = compile_expression("input.a.map(x, x * input.k)")
    failures: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(15):
                assert expr.evaluate({"input": {"a": [i, 1], "k": k}}) == [i * k, k]
        except BaseException as exc:  # reported below: a thread cannot fail the test
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert 1 <= len(sandbox.process_ids()) <= get_limits().sandbox_processes


def test_changed_budgets_replace_the_children() -> None:
    expr = compile_expression("[1].map(x, x)")
    expr.evaluate({})
    before = set(sandbox.process_ids())
    try:
        set_limits(expression_memory=256 << 20)
        assert expr.evaluate({}) == [1]
        after = set(sandbox.process_ids())
    finally:
        set_limits(DEFAULT_LIMITS)
    assert before
    assert after
    assert not before & after


def test_children_stop_when_the_interpreter_exits() -> None:
    code = ("from concordia import sandbox\n"
            "from concordia.definitions.expressions import compile_expression\n"
            "compile_expression('[1].map(x, x)').evaluate({})\n"
            "print(sandbox.process_ids())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    pids = json.loads(done.stdout)
    assert pids
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)
    assert pids == []


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for good; its parent (the exited interpreter) is no more.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


# -- other bounds


def test_a_result_too_large_is_refused_in_process() -> None:
    expr = compile_expression("input.s + input.s + input.s")
    assert expr.in_process
    with pytest.raises(ExpressionError, match="its result exceeds the limits: string of "
                                              "1200000 characters exceeds 262144"):
        expr.evaluate({"input": {"s": "x" * 400_000}})


def test_an_overlong_expression_is_refused_when_compiled() -> None:
    with pytest.raises(ExpressionError, match="is 4101 characters long, more than the 4096"):
        compile_expression("1 == " + "1" * 4096)


def test_only_the_variables_named_are_handed_to_the_library() -> None:
    # A value the library cannot convert, or a deep one, is no concern of an expression
    # that does not read it.
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    context = {"input": {"a": 1}, "results": {"odd": {1, 2}}, "event": deep}
    assert compile_expression("input.a == 1").evaluate(context) is True
    with pytest.raises(ExpressionError, match="Undefined variable"):
        compile_expression("missing == 1").evaluate(context)


def test_templates_are_bounded_like_any_expression() -> None:
    assert render_template("{{ [input.a].map(x, x * 2)[0] }} and {{ input.a }}",
                           {"input": {"a": 21}}) == "42 and 21"
