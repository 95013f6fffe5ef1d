"""Static checks of handler bodies (Python ``ast``; nothing is called or evaluated).

- a compensation whose body only logs and returns a constant (a stub that undoes nothing);
- an action that sleeps inside a loop (polling) instead of awaiting an event;
- a call to a function that accepts ``correlation_id`` made without passing it;
- an action whose step declares ``checkpoints: true`` that never calls
  ``ctx.checkpoint`` (nor ``ctx.acheckpoint``).
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log",
                "msg", "print"}
_SLEEPS = {"sleep"}


@dataclass(frozen=True, slots=True)
class SourceSpot:
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Parsed:
    fn: Callable[..., Any]
    tree: ast.FunctionDef | ast.AsyncFunctionDef
    file: str
    first_line: int

    def spot(self, node: ast.AST | None = None) -> SourceSpot:
        line = getattr(node, "lineno", 1) if node is not None else 1
        return SourceSpot(self.file, self.first_line + line - 1)


def parse_handler(fn: Callable[..., Any]) -> Parsed | None:
    """The function's own AST, or None when its source is not available."""
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        lines, first = inspect.getsourcelines(target)
        file = inspect.getsourcefile(target) or "<unknown>"
        if os.path.isabs(file) and file.startswith(os.getcwd() + os.sep):
            file = os.path.relpath(file)  # same style as the YAML paths in one report
    except (OSError, TypeError):
        return None
    try:
        module = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return None
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return Parsed(target, node, file, first)
    return None


def _body_without_docstring(tree: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body


def _is_log_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _LOG_METHODS
    return isinstance(func, ast.Name) and func.id in _LOG_METHODS


def _is_constant(node: ast.AST | None) -> bool:
    if node is None or isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Dict):
        return all(_is_constant(k) for k in node.keys) and all(
            _is_constant(v) for v in node.values)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return all(_is_constant(e) for e in node.elts)
    return False


def is_stub(parsed: Parsed) -> bool:
    """True when the body only logs, passes, and returns a constant."""
    body = _body_without_docstring(parsed.tree)
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and (_is_log_call(stmt.value) or isinstance(
                stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Return) and _is_constant(stmt.value):
            continue
        return False
    return True


def polling_loops(parsed: Parsed) -> Iterator[ast.AST]:
    """Loops in the handler that sleep: waiting by polling."""
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.For | ast.While | ast.AsyncFor):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call) and _call_name(inner) in _SLEEPS:
                    yield node
                    break


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def correlation_callees(package: str) -> set[str]:
    """Names of functions and methods in ``package`` that take a ``correlation_id``."""
    names: set[str] = set()
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == package or mod_name.startswith(package + ".")):
            continue
        for _, obj in inspect.getmembers(module):
            if getattr(obj, "__module__", None) != mod_name:
                continue
            candidates: list[Any] = []
            if inspect.isclass(obj):
                candidates = [m for _, m in inspect.getmembers(obj, inspect.isfunction)]
            elif inspect.isfunction(obj):
                candidates = [obj]
            for fn in candidates:
                try:
                    params = inspect.signature(fn).parameters
                except (TypeError, ValueError):
                    continue
                if "correlation_id" in params:
                    names.add(fn.__name__)
    return names


def calls_missing_correlation(parsed: Parsed, callees: set[str]) -> Iterator[tuple[ast.Call, str]]:
    """Calls to a correlation-taking callee that pass no ``correlation_id``."""
    for node in ast.walk(parsed.tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name is None or name not in callees:
            continue
        passed = any(k.arg == "correlation_id" or k.arg is None for k in node.keywords)
        if not passed:
            yield node, name


_CHECKPOINTS = {"checkpoint", "acheckpoint"}


def checkpoints(parsed: Parsed) -> str:
    """Whether the handler checkpoints: ``"yes"`` (it calls ``<ctx>.checkpoint``, in its
    body or a function nested in it), ``"maybe"`` (it does not, but hands its context to
    another call, which may), or ``"no"``."""
    args = parsed.tree.args.posonlyargs + parsed.tree.args.args
    names = [a.arg for a in args if a.arg not in ("self", "cls")]
    ctx = names[0] if names else "ctx"
    handed = False
    for node in ast.walk(parsed.tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in _CHECKPOINTS
                and isinstance(func.value, ast.Name) and func.value.id == ctx):
            return "yes"
        if any(isinstance(a, ast.Name) and a.id == ctx for a in node.args) or any(
                isinstance(k.value, ast.Name) and k.value.id == ctx for k in node.keywords):
            handed = True
    return "maybe" if handed else "no"
