"""Static checks of CEL expressions: only functions the evaluator runs, macros' own names.

The CEL library compiles any call, known or not (``system("ls")``, ``__import__('os')``)
and fails only when the expression is evaluated, which for a saga means mid-run. These
checks refuse such calls when a definition is validated, with the file and line.
"""

from __future__ import annotations

import re

from concordia.definitions.expressions import Expression, blank_strings

# What ``Expression.functions`` reports for the parts of CEL the evaluator implements:
# operators under their internal names, the standard functions and methods, and the names
# the macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``; ``has`` compiles
# to a field test) expand into. Checked against the evaluator by a test that runs each.
OPERATORS = frozenset({
    "_+_", "_-_", "_*_", "_/_", "_%_", "-_",  # arithmetic
    "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_",  # comparison
    "_&&_", "_||_", "!_", "_?_:_", "@not_strictly_false",  # logic
    "_[_]", "@in",  # index, membership
})
FUNCTIONS = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "type", "dyn",  # conversions
    "timestamp", "duration",
    "matches", "startsWith", "endsWith", "contains",  # strings
    "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",  # timestamps, durations
})
ALLOWED = OPERATORS | FUNCTIONS

# `list.all(x, ...)`: the macro's first argument names each item inside the call.
_BINDER_RE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


def unknown_functions(expr: Expression) -> list[str]:
    """Functions and macros ``expr`` calls that the evaluator does not implement."""
    return sorted(expr.functions - ALLOWED)


def bound_names(source: str) -> set[str]:
    """Names a macro binds (``c`` in ``xs.exists(c, c > 1)``); the library reports them as
    variables, but they are no reference to the run's data."""
    return {m.group(1) for m in _BINDER_RE.finditer(blank_strings(source))}


def describe_functions() -> str:
    """The allowed functions, for a hint."""
    return ", ".join(sorted(FUNCTIONS))
