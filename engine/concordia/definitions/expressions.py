"""CEL expressions: the one sandboxed language for matches, mappings and policy rules.

CEL (through the Rust-backed ``common-expression-language`` package, imported as ``cel``)
cannot call Python, import modules or loop forever, and ``Program.variables()`` lets the
validator check every referenced name statically. It is imported on first use only
(:mod:`concordia.cel_library`), never on the CLI's start-up path for commands that need no
expression.

CEL always ends, but not always soon: the library has no cost limit, and a comprehension
inside a comprehension, or a string doubled inside ``map``, runs for minutes or takes all
memory. So each expression is classified once, when compiled. One without comprehension
macros, with only functions of linear cost and few operators, costs time and memory in
proportion to its inputs, which the engine bounds (:func:`concordia.values.check_value`
at the journal's borders): it is evaluated here, in-process (measured 2026-11-29 on the
project's 2-core machine: 6 µs for a policy condition, of which the bounds take 1.5 µs).
Any other is evaluated in a sandbox process with a time and a memory budget
(:mod:`concordia.sandbox`: 65-110 µs a round trip, 50-75 ms to start a process).
Either way the context's depth is bounded before the library sees it (it converts values
recursively on the native stack, where a 10,000-deep value crashes the process) and the
result's size after.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from concordia.cel_library import cel
from concordia.errors import ExpressionError, ValueLimitError
from concordia.values import Limits, check_result, get_limits

# `results.step_name` or `results["step_name"]` / `results['step_name']`. String literals
# are blanked out first so that text inside quotes never counts as a reference.
_STRING_RE = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_RESULT_DOT_RE = re.compile(r"(?<![\w.])results\s*\.\s*([A-Za-z_]\w*)")
_RESULT_INDEX_RE = re.compile(r"(?<![\w.])results\s*\[\s*(\"[^\"]*\"|'[^']*')\s*\]")
_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

# Comprehension macros loop over their input, and nested ones multiply: any mention of
# these words, even as a field name or inside a string, sends an expression to the
# sandbox (a false alarm costs a round trip, a miss could cost the process). The library
# expands `all`, `exists`, `exists_one`, `map` and `filter`; the other names are the
# macros of other CEL implementations, here in case a later version of the library adds
# them.
_MACROS = ("all", "exists", "exists_one", "map", "filter", "existsOne", "transformList",
           "transformMap", "transformMapEntry", "sortBy", "bind", "block", "optMap",
           "optFlatMap", "fold", "reduce")
_MACRO_RE = re.compile(r"\b(?:" + "|".join(_MACROS) + r")\b")
# Functions and operators (as `Program.functions()` names them) whose cost is linear in
# their operands. `matches` is one: the library's regular expressions (Rust `regex`)
# match in linear time and refuse patterns beyond a fixed compiled size.
_LINEAR_FUNCTIONS = frozenset({
    "_+_", "_-_", "_*_", "_/_", "_%_", "-_", "!_", "_==_", "_!=_", "_<_", "_<=_", "_>_",
    "_>=_", "_&&_", "_||_", "_?_:_", "_[_]", "@in", "@not_strictly_false",
    "size", "contains", "startsWith", "endsWith", "matches",
    "int", "uint", "double", "string", "bytes", "bool", "dyn", "type", "timestamp",
    "duration", "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate",
    "getDayOfWeek", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
# `+` concatenates strings and lists: with at most this many the result is at most that
# many times the inputs' size.
_MAX_PLUS = 8
# Operator characters: a long chain (`a && b && ...`) is parsed into a tree as deep as it
# is long, which the library evaluates by recursion on the native stack; past a few
# hundred levels that overflows a small thread stack, so long chains go to the sandbox.
_OPERATOR_RE = re.compile(r"[-+*/%<>=!&|?]|\bin\b")
_MAX_OPERATORS = 64


class Expression:
    """A compiled CEL expression with the names it references.

    ``in_process`` tells where it is evaluated: in this process when its cost is linear
    in its inputs, else in the sandbox (see the module docstring).
    """

    __slots__ = ("_program", "functions", "in_process", "source", "variables")

    def __init__(self, source: str) -> None:
        self.source = source
        longest = get_limits().max_expression_length
        if len(source) > longest:
            raise ExpressionError(source[:60] + "...", f"is {len(source)} characters long, "
                                  f"more than the {longest} an expression may have")
        try:
            self._program = cel().compile(source)  # imported on first use
        except (ValueError, RuntimeError) as exc:
            raise ExpressionError(source, _first_line(str(exc))) from None
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise ExpressionError(source, f"the CEL parser failed: {_first_line(str(exc))}"
                                  ) from None
        self.variables: frozenset[str] = frozenset(self._program.variables())
        # Functions and operators called, as the library names them: `size`, `_+_`, and
        # member calls such as `startsWith`; macros (`map`, `exists`, ...) are expanded
        # into comprehensions and do not appear, an unknown macro name does.
        self.functions: frozenset[str] = frozenset(self._program.functions())
        self.in_process: bool = _linear_cost(source, self.functions)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate over ``context``; any failure becomes :class:`ExpressionError`.

        Bounded: a context nested deeper than ``max_context_depth`` is refused, an
        expression that may be costly runs within the time and memory budgets of
        :class:`concordia.values.Limits`, and a result beyond ``max_output_bytes`` is
        refused.
        """
        limits = get_limits()
        # Only the variables the expression names: the library converts every value it is
        # given, whether read or not, so a condition on `input` need not pay for `results`.
        scope = {name: context[name] for name in self.variables if name in context}
        if _deeper_than(scope, limits.max_context_depth):
            raise ExpressionError(self.source, "its context is nested deeper than "
                                               f"{limits.max_context_depth} levels")
        try:
            if self.in_process:
                value = self._program.execute(scope)
            else:
                value = _sandboxed(self.source, scope, limits)
            check_result(value, limits)
        except KeyError as exc:
            raise ExpressionError(self.source, f"no such field {exc.args[0]!r}") from None
        except (ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
            raise ExpressionError(self.source, _first_line(str(exc))) from None
        except ValueLimitError as exc:
            raise ExpressionError(self.source, f"its result exceeds the limits: {exc.reason}"
                                  ) from None
        except Exception as exc:  # e.g. IndexError for an index past a list's end
            raise ExpressionError(self.source, f"{type(exc).__name__}: "
                                               f"{_first_line(str(exc))}") from None
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise ExpressionError(self.source, "the CEL library failed: "
                                               f"{_first_line(str(exc))}") from None
        return value


def _sandboxed(source: str, scope: dict[str, Any], limits: Limits) -> Any:
    from concordia import sandbox  # only expressions that need it pay for its import

    return sandbox.evaluate(source, scope, limits)


def _linear_cost(source: str, functions: frozenset[str]) -> bool:
    """Whether time and memory to evaluate ``source`` are linear in its inputs' size."""
    return (_MACRO_RE.search(source) is None and functions <= _LINEAR_FUNCTIONS
            and source.count("+") <= _MAX_PLUS
            and len(_OPERATOR_RE.findall(source)) <= _MAX_OPERATORS)


def _deeper_than(scope: dict[str, Any], limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` in ``scope`` (itself level 1).

    Level by level, so it stops at ``limit`` however deep the value goes, and it looks at
    nothing but containers: ~4 µs for a whole run scope (input of 10 fields, three step
    results, the run and an event), against ~70 µs for the library to convert it.
    """
    level: list[Any] = [scope]
    for _ in range(limit):
        below: list[Any] = []
        for container in level:
            entries = (container.values()
                       if type(container) is dict or isinstance(container, Mapping)
                       else container)
            for item in entries:
                kind = type(item)
                if kind in _SCALARS:
                    continue
                if kind in _CONTAINERS or isinstance(item, Mapping | list | tuple):
                    below.append(item)
        if not below:
            return False
        level = below
    return True


_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
# What the library converts recursively: dicts and any mapping, lists and tuples.
_CONTAINERS = frozenset({dict, list, tuple})


def _is_panic(exc: BaseException) -> bool:
    # A Rust panic inside the library surfaces as pyo3's PanicException, which derives
    # from BaseException and cannot be imported by name.
    return type(exc).__name__ == "PanicException"


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile (and cache) a CEL expression; raises :class:`ExpressionError`."""
    return Expression(source)


def result_references(source: str) -> list[str]:
    """Step names an expression reads through ``results``, in order of appearance."""
    blanked = blank_strings(source)
    names = [m.group(1) for m in _RESULT_DOT_RE.finditer(blanked)]
    # Index form: look at the original text since the key itself is a string literal.
    names += [m.group(1)[1:-1] for m in _RESULT_INDEX_RE.finditer(source)]
    return names


def template_expressions(template: str) -> list[str]:
    """The CEL expressions inside ``{{ ... }}`` of a reason template."""
    return [m.group(1).strip() for m in _TEMPLATE_RE.finditer(template)]


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Fill ``{{ expr }}`` placeholders with the values of their CEL expressions."""

    def fill(match: re.Match[str]) -> str:
        value = compile_expression(match.group(1).strip()).evaluate(context)
        return _display(value)

    return _TEMPLATE_RE.sub(fill, template)


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def blank_strings(source: str) -> str:
    """``source`` with each string literal's content blanked (its quotes and length kept),
    so that patterns looking for names never match inside a string."""
    return _STRING_RE.sub(lambda m: _keep_quotes_only(m.group(0)), source)


def _keep_quotes_only(literal: str) -> str:
    return literal[0] + " " * (len(literal) - 2) + literal[-1]


def _first_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return "invalid expression"
    # The Rust parser says "Failed to parse expression '<src>': ERROR: <input>:1:4: ..."
    # and then draws the source with a caret on further lines. ExpressionError already
    # names the source, so keep only the position and the reason.
    first = lines[0]
    marker = ": ERROR: <input>:"
    if first.startswith("Failed to parse expression") and marker in first:
        position, _, reason = first.split(marker, 1)[1].partition(": ")
        line, _, column = position.partition(":")
        where = f"column {column}" if line == "1" else f"line {line}, column {column}"
        return f"{reason} ({where} of the expression)"
    return first
