"""CEL expressions: the one sandboxed language for matches, mappings and policy rules.

CEL (through the Rust-backed ``common-expression-language`` package, imported as ``cel``)
cannot call Python, import modules or loop forever, and ``Program.variables()`` lets the
validator check every referenced name statically. ``import cel`` costs ~0.2 s because the
package pulls in its CLI, so it is imported on first use only, never on the CLI's start-up
path for commands that need no expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from concordia.errors import ExpressionError

# `results.step_name` or `results["step_name"]` / `results['step_name']`. String literals
# are blanked out first so that text inside quotes never counts as a reference.
_STRING_RE = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_RESULT_DOT_RE = re.compile(r"(?<![\w.])results\s*\.\s*([A-Za-z_]\w*)")
_RESULT_INDEX_RE = re.compile(r"(?<![\w.])results\s*\[\s*(\"[^\"]*\"|'[^']*')\s*\]")
_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class Expression:
    """A compiled CEL expression with the names it references."""

    __slots__ = ("_program", "functions", "source", "variables")

    def __init__(self, source: str) -> None:
        import cel  # lazy on purpose: see the module docstring

        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ExpressionError(source, _first_line(str(exc))) from None
        self.variables: frozenset[str] = frozenset(self._program.variables())
        # Functions and operators called, as the library names them: `size`, `_+_`, and
        # member calls such as `startsWith`; macros (`map`, `exists`, ...) are expanded
        # into comprehensions and do not appear, an unknown macro name does.
        self.functions: frozenset[str] = frozenset(self._program.functions())

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate over ``context``; any failure becomes :class:`ExpressionError`."""
        try:
            return self._program.execute(dict(context))
        except KeyError as exc:
            raise ExpressionError(self.source, f"no such field {exc.args[0]!r}") from None
        except (ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
            raise ExpressionError(self.source, _first_line(str(exc))) from None


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile (and cache) a CEL expression; raises :class:`ExpressionError`."""
    return Expression(source)


def result_references(source: str) -> list[str]:
    """Step names an expression reads through ``results``, in order of appearance."""
    blanked = _STRING_RE.sub(lambda m: _keep_quotes_only(m.group(0)), source)
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
