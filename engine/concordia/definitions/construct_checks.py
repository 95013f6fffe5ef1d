"""Whole-tree checks of the language's step constructs: conditions, catch tables, fan-out
over a list, and child sagas.

- ``if``, ``for_each`` and a catch entry's ``result`` are expressions, checked like every
  other (variables, functions, which results are ready); a catch ``result`` may also read
  ``error``.
- A catch ``goto`` names a later step: an unknown one, or one that does not come after
  the step (a loop), is refused.
- ``for_each`` over something that is plainly not a list (a constant that is not one, or
  an input field the input schema types otherwise) is refused.
- A child saga must exist; its ``input`` mapping must fit the child's input schema; and no
  saga may call itself, directly or through others (the run would never end).
- Reading the result of a conditional step without ``has()`` is a warning: the result is
  missing whenever the condition was false.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from concordia.definitions.celcheck import bound_names
from concordia.definitions.check_api import Reporter
from concordia.definitions.expressions import compile_expression, result_references
from concordia.definitions.messages import suggest
from concordia.definitions.models import ActionStep, SagaStep, Step
from concordia.definitions.outline import SagaOutline
from concordia.errors import ExpressionError

STEP_VARS = frozenset({"input", "results", "run"})
CATCH_VARS = STEP_VARS | {"error"}
CONTINUE = "continue"
_INPUT_PATH = re.compile(r"\s*input((?:\s*\.\s*[A-Za-z_]\w*)+)\s*")


class ConstructChecks:
    """The checks above, reporting through the tree checks running them (into their
    catalog's problems)."""

    def __init__(self, tree: Reporter) -> None:
        self.tree = tree
        self.catalog = tree.catalog

    # -- one step -------------------------------------------------------------------------

    def check_step(self, outline: SagaOutline, step: Step, base: str, readable: set[str],
                   names: list[str], depth: dict[str, int]) -> None:
        path = outline.saga.source
        tree = self.tree
        if step.if_ is not None:
            tree.check_expr(path, step.if_, STEP_VARS, f"{base}/if", readable, names)
        if isinstance(step, ActionStep):
            self._check_catch(path, step, base, readable, names, depth)
            if step.for_each is not None:
                tree.check_expr(path, step.for_each, STEP_VARS, f"{base}/for_each", readable,
                                 names)
                self._check_list(path, step.for_each, outline.saga.input_schema,
                                 f"{base}/for_each")
        elif isinstance(step, SagaStep):
            self._check_catch(path, step, base, readable, names, depth)
            self._check_child(path, step, base, readable, names)

    def _check_catch(self, path: str, step: ActionStep | SagaStep, base: str,
                     readable: set[str],
                     names: list[str], depth: dict[str, int]) -> None:
        for k, clause in enumerate(step.catch):
            where = f"{base}/catch/{k}"
            target = clause.goto
            if target != CONTINUE and target not in names:
                self.tree.problem(path, "unknown-step",
                                   f"catch goto names unknown step {target!r}", f"{where}/goto",
                                   hint=suggest(target, [*names, CONTINUE]))
            elif target != CONTINUE and depth.get(target, 0) <= depth.get(step.name, 0):
                self.tree.problem(
                    path, "goto-not-forward",
                    f"catch goto names step {target!r}, which does not come after "
                    f"{step.name!r}; a saga has no loops, a caught error can only skip ahead",
                    f"{where}/goto", hint="name a later step, or `continue`")
            for key, expr in clause.result.items():
                self.tree.check_expr(path, expr, CATCH_VARS, f"{where}/result/{key}",
                                      readable, names)

    def _check_list(self, path: str, source: str, input_schema: dict[str, Any],
                    pointer: str) -> None:
        """Refuse a ``for_each`` that can be seen not to give a list."""
        try:
            expr = compile_expression(source)
        except ExpressionError:
            return  # reported by the expression check
        found: str | None = None
        if not (expr.variables - bound_names(source)):
            try:
                value = expr.evaluate({})
            except ExpressionError:
                return  # fails at run time with its own message; nothing typed to check
            if not isinstance(value, list):
                found = _json_type(value)
        else:
            match = _INPUT_PATH.fullmatch(source)
            if match:
                found = _declared_non_list(input_schema, re.split(r"\s*\.\s*",
                                                                  match.group(1).strip(". ")))
        if found is not None:
            self.tree.problem(path, "for-each-not-list",
                               f"for_each must give a list; {source!r} gives {found}",
                               pointer, hint="give a list expression, e.g. input.items or "
                                             "results.load.ids")

    def _check_child(self, path: str, step: SagaStep, base: str, readable: set[str],
                     names: list[str]) -> None:
        catalog = self.catalog
        for key, expr in (step.input or {}).items():
            self.tree.check_expr(path, expr, STEP_VARS, f"{base}/input/{key}", readable,
                                  names)
        if catalog.has_saga(step.saga, step.version):
            child = catalog.saga(step.saga, step.version)
            if step.input is not None:
                self.tree.check_mapping_fields(path, step.input, child.input_schema,
                                                f"{base}/input", f"saga {child.name!r}")
        elif not catalog.is_broken("saga", step.saga):
            known = {name for name, _ in catalog.sagas}
            self.tree.problem(path, "unknown-saga", f"unknown saga {step.saga!r}"
                               + (f" version {step.version}" if step.version else ""),
                               f"{base}/saga", hint=suggest(step.saga, known))

    # -- reads of conditional results -----------------------------------------------------

    def check_conditional_reads(self, outline: SagaOutline) -> None:
        """Warn where an expression reads a conditional step's result unguarded."""
        conditional = {s.step.name for s in outline.slots
                       if s.step is not None and s.step.if_ is not None}
        if not conditional:
            return
        for slot in outline.slots:
            step = slot.step
            if step is None:
                continue
            for pointer, source in _expressions(step, f"/steps/{slot.index}"):
                for ref in dict.fromkeys(result_references(source)):
                    if ref in conditional and ref != step.name and not guarded(source, ref):
                        self.tree.problem(
                            outline.saga.source, "unguarded-result",
                            f"reads results.{ref}, which is missing when the condition of "
                            f"{ref!r} is false", pointer, severity="warning",
                            hint=f"guard it: has(results.{ref}) ? results.{ref}.… : null")

    # -- the call graph -------------------------------------------------------------------

    def check_recursion(self, outlines: Sequence[SagaOutline]) -> None:
        """No saga may reach itself through its child saga steps."""
        calls: dict[str, set[str]] = {}
        for outline in outlines:
            calls.setdefault(outline.saga.name, set()).update(
                s.step.saga for s in outline.slots if isinstance(s.step, SagaStep))
        for outline in outlines:
            for slot in outline.slots:
                if not isinstance(slot.step, SagaStep):
                    continue
                loop = _path_back(calls, slot.step.saga, outline.saga.name)
                if loop is not None:
                    chain = " -> ".join([outline.saga.name, *loop])
                    self.tree.problem(outline.saga.source, "saga-recursion",
                                       f"saga {outline.saga.name!r} calls itself: {chain}",
                                       f"/steps/{slot.index}/saga",
                                       hint="a child saga may not run its parent (or any "
                                            "saga above it): its run would never end")


def _path_back(calls: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The call path from ``start`` to ``goal`` (both included), or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, trail = stack.pop()
        if name == goal:
            return trail
        if name in seen:
            continue
        seen.add(name)
        for callee in sorted(calls.get(name, ()), reverse=True):
            stack.append((callee, [*trail, callee]))
    return None


def _expressions(step: Step, base: str) -> Iterable[tuple[str, str]]:
    """(pointer, source) of the expressions of a step that read results."""
    if step.if_ is not None:
        yield f"{base}/if", step.if_
    for k, emit in enumerate(step.emit):
        for key, source in emit.payload.items():
            yield f"{base}/emit/{k}/payload/{key}", source
    mapping = getattr(step, "input", None)
    if isinstance(mapping, dict):
        for key, source in mapping.items():
            yield f"{base}/input/{key}", source
    if isinstance(step, ActionStep) and step.for_each is not None:
        yield f"{base}/for_each", step.for_each
    match = getattr(step, "match", None)
    if isinstance(match, str):
        yield f"{base}/match", match


def guarded(source: str, ref: str) -> bool:
    """Whether ``source`` tests ``has(results.<ref>)`` before reading that result."""
    return re.search(rf"has\(\s*results\s*\.\s*{re.escape(ref)}\s*\)", source) is not None


def _declared_non_list(schema: dict[str, Any], path: list[str]) -> str | None:
    """The declared type of ``input.<path>`` when the schema types it and not as a list."""
    node: Any = schema
    for part in path:
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(props, dict) or part not in props:
            return None
        node = props[part]
    declared = node.get("type") if isinstance(node, dict) else None
    kinds = [declared] if isinstance(declared, str) else declared
    if not isinstance(kinds, list) or not kinds or "array" in kinds:
        return None
    return "a value of type " + " or ".join(str(k) for k in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__
