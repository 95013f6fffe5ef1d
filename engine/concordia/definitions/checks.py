"""The whole-tree checks: what no single file can tell about itself.

Unknown or misspelled event and policy names (with "did you mean"), steps that read
results of later or unknown steps, dependency cycles, payload mappings that miss or
invent fields of the event's schema, expressions that do not compile, call functions
the evaluator lacks or read unknown variables, policies that can never reject, and —
given the names a handler registry binds — handlers nobody registered.

Every saga and policy is checked through its outline, so the good parts of a definition
with problems of its own are checked too; a reference to a definition that has problems
of its own is not also reported as unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from concordia.definitions.celcheck import bound_names, describe_functions, unknown_functions
from concordia.definitions.check_api import CheckedTree
from concordia.definitions.construct_checks import STEP_VARS, ConstructChecks, guarded
from concordia.definitions.expressions import (
    compile_expression,
    result_references,
    template_expressions,
)
from concordia.definitions.messages import suggest
from concordia.definitions.models import ActionStep, AwaitStep, Emit, PolicyStep, Step
from concordia.definitions.outline import PolicyOutline, SagaOutline, StepSlot
from concordia.definitions.problems import Severity
from concordia.errors import ExpressionError

# Variables each kind of expression may read.
AWAIT_VARS = STEP_VARS | {"event"}
TRIGGER_VARS = frozenset({"event"})
POLICY_VARS = frozenset({"input"})


class HandlerNames(Protocol):
    """What the checks need to know of a registry: the names it binds."""

    def action_names(self) -> Iterable[str]: ...
    def compensation_names(self) -> Iterable[str]: ...


class TreeChecks:
    """Runs every cross-file check over a loaded catalog, adding to its problems."""

    def __init__(self, catalog: CheckedTree) -> None:
        self.catalog = catalog
        self.constructs = ConstructChecks(self)

    def run(self, handlers: HandlerNames | None) -> None:
        for outline in self.catalog.outlines:
            self._check_saga(outline)
        self.constructs.check_recursion(self.catalog.outlines)
        for policy in self.catalog.policy_outlines:
            self._check_policy(policy)
        if handlers is not None:
            self._check_handlers(handlers)

    def problem(self, path: str, code: str, message: str, pointer: str = "",
                 hint: str | None = None, severity: Severity = "error") -> None:
        self.catalog.add_problem(path, code, message, pointer, hint, severity)

    # -- sagas ---------------------------------------------------------------------------

    def _check_saga(self, outline: SagaOutline) -> None:
        saga = outline.saga
        path = saga.source
        names = outline.names
        seen: set[str] = set()
        for slot in outline.slots:
            if slot.name is not None and slot.name in seen and slot.step is not None:
                self.problem(path, "duplicate-step", f"step name {slot.name!r} is used twice",
                              f"/steps/{slot.index}/name")
            if slot.name is not None:
                seen.add(slot.name)
        deps = self._dependencies(outline)
        if deps is None:
            return
        ancestors = _ancestors(deps)
        depth = _depths(deps)
        if saga.trigger is not None:
            self._check_event_ref(path, saga.trigger.event, saga.trigger.version,
                                  "/trigger/event")
            for key, expr in (saga.trigger.input or {}).items():
                self.check_expr(path, expr, TRIGGER_VARS, f"/trigger/input/{key}", set(), names)
        for slot in outline.slots:
            step = slot.step
            if step is None:
                continue
            base = f"/steps/{slot.index}"
            readable = ancestors.get(step.name, set())
            self._check_step(path, step, base, readable, names, depth)
            self.constructs.check_step(outline, step, base, readable, names, depth)
            self._check_emits(path, step.emit, f"{base}/emit", readable | {step.name}, names)
            if isinstance(step, ActionStep):
                self._check_emits(path, step.emit_on_compensate, f"{base}/emit_on_compensate",
                                  readable | {step.name}, names)
        every = set(names)
        for key, emits in outline.emit_lists():
            self._check_emits(path, emits, f"/{key}", every, names)
        if "on_failure" in outline.emits_checked:
            self._check_failure_reads(path, saga.on_failure)
        self.constructs.check_conditional_reads(outline)

    def _check_failure_reads(self, path: str, on_failure: Sequence[Emit]) -> None:
        """``on_failure`` runs after any step may have failed: an unguarded read of a step's
        result fails the emission exactly when that step is the one that failed."""
        for k, emit in enumerate(on_failure):
            for key, expr in emit.payload.items():
                for ref in dict.fromkeys(result_references(expr)):
                    if not guarded(expr, ref):
                        self.problem(
                            path, "unguarded-result",
                            f"on_failure reads results.{ref}, which is missing when "
                            f"{ref!r} (or a step before it) is what failed",
                            f"/on_failure/{k}/payload/{key}", severity="warning",
                            hint=f"guard it: has(results.{ref}) ? results.{ref}.… : null")

    def _dependencies(self, outline: SagaOutline) -> dict[str, set[str]] | None:
        """Each step's direct predecessors; None (with problems) on unknown names or cycles.

        Steps with problems of their own keep their place in the order (the next step
        still follows them) but their own ``depends_on`` is not judged again.
        """
        path = outline.saga.source
        slots = [s for s in outline.slots if s.name is not None]
        names = [s.name for s in slots if s.name is not None]
        deps: dict[str, set[str]] = {}
        ok = True
        for pos, slot in enumerate(slots):
            name = str(slot.name)
            if slot.depends_on is None:
                # A predecessor of the same name is a duplicate step (reported on its
                # own); it must not also read as a step depending on itself.
                prev = names[pos - 1] if pos else name
                deps[name] = {prev} - {name}
                continue
            deps[name] = {d for d in slot.depends_on if d in names and d != name}
            if slot.step is None:
                continue
            ok &= self._check_depends_on(path, slot, names)
        if not ok:
            return None
        cycle = _find_cycle(deps)
        if cycle:
            idx = next(s.index for s in slots if s.name == cycle[0])
            self.problem(path, "dependency-cycle",
                          "steps depend on each other in a cycle: " + " -> ".join(cycle),
                          f"/steps/{idx}/depends_on")
            return None
        return deps

    def _check_depends_on(self, path: str, slot: StepSlot, names: list[str]) -> bool:
        ok = True
        for j, dep in enumerate(slot.depends_on or ()):
            if dep not in names:
                self.problem(path, "unknown-step",
                              f"step {slot.name!r} depends on unknown step {dep!r}",
                              f"/steps/{slot.index}/depends_on/{j}",
                              hint=suggest(dep, names))
                ok = False
            elif dep == slot.name:
                self.problem(path, "dependency-cycle", f"step {slot.name!r} depends on itself",
                              f"/steps/{slot.index}/depends_on/{j}")
                ok = False
        return ok

    def _check_step(self, path: str, step: Step, base: str, readable: set[str],
                    names: list[str], depth: dict[str, int]) -> None:
        """``depth``: each step's stage, for the direction of an await's jump."""
        if isinstance(step, AwaitStep):
            self._check_event_ref(path, step.event, step.version, f"{base}/await")
            if step.match:
                self.check_expr(path, step.match, AWAIT_VARS, f"{base}/match", readable, names)
            if step.on_timeout != "compensate" and step.on_timeout not in names:
                self.problem(path, "unknown-step",
                              f"on_timeout names unknown step {step.on_timeout!r}",
                              f"{base}/on_timeout",
                              hint=suggest(step.on_timeout, [*names, "compensate"])
                              or "on_timeout is `compensate` (the default) or the name of "
                                 "a later step to continue with")
            elif step.on_timeout != "compensate" and depth.get(
                    step.on_timeout, 0) <= depth.get(step.name, 0):
                # The engine only jumps forward: an earlier step (or one running beside
                # the await) would silently mean "carry on with the next step".
                self.problem(path, "on-timeout-not-forward",
                              f"on_timeout names step {step.on_timeout!r}, which does not "
                              f"come after {step.name!r}; a timed-out await can only skip "
                              "ahead", f"{base}/on_timeout",
                              hint="name a later step, or `compensate`")
        elif isinstance(step, PolicyStep):
            self._check_policy_ref(path, step, base)
            for key, expr in step.input.items():
                self.check_expr(path, expr, STEP_VARS, f"{base}/input/{key}", readable, names)

    def _check_policy_ref(self, path: str, step: PolicyStep, base: str) -> None:
        catalog = self.catalog
        if catalog.has_policy(step.policy, step.version):
            policy = catalog.policy(step.policy, step.version)
            self.check_mapping_fields(path, step.input, policy.input_schema,
                                       f"{base}/input", f"policy {policy.name!r}")
        elif not catalog.is_broken("policy", step.policy):
            self.problem(path, "unknown-policy", f"unknown policy {step.policy!r}"
                          + (f" version {step.version}" if step.version else ""),
                          f"{base}/policy", hint=suggest(step.policy,
                                                               catalog.policy_names()))

    def _check_emits(self, path: str, emits: Sequence[Emit], base: str, readable: set[str],
                     names: list[str]) -> None:
        for k, emit in enumerate(emits):
            pointer = f"{base}/{k}"
            if self._check_event_ref(path, emit.event, emit.version, f"{pointer}/event"):
                event = self.catalog.event(emit.event, emit.version)
                self.check_mapping_fields(path, emit.payload, event.payload_schema,
                                           f"{pointer}/payload", f"event {event.name!r}")
            for key, expr in emit.payload.items():
                self.check_expr(path, expr, STEP_VARS, f"{pointer}/payload/{key}", readable,
                                 names)

    def _check_event_ref(self, path: str, name: str, version: int | None, pointer: str) -> bool:
        catalog = self.catalog
        if catalog.has_event(name, version):
            return True
        if catalog.is_broken("event", name):
            return False  # its own problems are reported where it is defined
        if version is not None and name in catalog.event_names():
            self.problem(path, "unknown-event-version",
                          f"event {name!r} has no version {version}", pointer)
            return False
        self.problem(path, "unknown-event", f"event {name!r} is not in the taxonomy", pointer,
                      hint=suggest(name, catalog.event_names())
                      or "add it under definitions/events/")
        return False

    def check_mapping_fields(self, path: str, mapping: dict[str, str],
                              schema: dict[str, object], pointer: str, what: str) -> None:
        props = schema.get("properties")
        if not isinstance(props, dict):
            return
        required = schema.get("required", [])
        for name in required:  # type: ignore[attr-defined]
            if name not in mapping:
                self.problem(path, "missing-field",
                              f"mapping for {what} misses required field {name!r}", pointer)
        if schema.get("additionalProperties", True) is False:
            for name in mapping:
                if name not in props:
                    self.problem(path, "unknown-field", f"{what} has no field {name!r}",
                                  f"{pointer}/{name}", hint=suggest(name, props))

    def check_expr(self, path: str, source: str, allowed: frozenset[str], pointer: str,
                    readable: set[str], names: list[str]) -> None:
        try:
            expr = compile_expression(source)
        except ExpressionError as exc:
            self.problem(path, "bad-expression", str(exc), pointer)
            return
        for fn in unknown_functions(expr):
            self.problem(path, "unknown-function",
                          f"expression calls {fn!r}, which is not a CEL function",
                          pointer, hint=f"CEL's functions: {describe_functions()}, and the "
                                        "macros has, all, exists, exists_one, map, filter")
        for var in sorted(expr.variables - allowed - bound_names(source)):
            self.problem(path, "unknown-variable",
                          f"expression reads {var!r}; it may read only "
                          f"{', '.join(sorted(allowed))}", pointer,
                          hint=suggest(var, allowed))
        if "results" not in allowed:
            return
        for ref in result_references(source):
            if ref not in names:
                self.problem(path, "unknown-step", f"expression reads the result of unknown "
                              f"step {ref!r}", pointer, hint=suggest(ref, names))
            elif ref not in readable:
                self.problem(path, "result-not-ready",
                              f"expression reads the result of step {ref!r}, which has not "
                              "completed at this point", pointer,
                              hint="read only steps this one depends on (directly or not)")

    # -- policies and handlers -----------------------------------------------------------

    def _check_policy(self, outline: PolicyOutline) -> None:
        path = outline.source
        for i, rule in outline.rules:
            self.check_expr(path, rule.when, POLICY_VARS, f"/rules/{i}/when", set(), [])
            for expr in template_expressions(rule.reason):
                self.check_expr(path, expr, POLICY_VARS, f"/rules/{i}/reason", set(), [])
        for expr in template_expressions(outline.default_reason or ""):
            self.check_expr(path, expr, POLICY_VARS, "/default/reason", set(), [])
        policy = outline.policy
        if policy is not None and not policy.can_reject:
            self.problem(path, "policy-never-rejects",
                          f"policy {policy.name!r} approves everything: no rule and no default "
                          "can reject", "/rules",
                          hint="add a rule with `decision: reject` for what must not pass")

    def _check_handlers(self, handlers: HandlerNames) -> None:
        bound = {"action": set(handlers.action_names()),
                 "compensation": set(handlers.compensation_names())}
        for outline in self.catalog.outlines:
            for kind, name, index in _handler_uses(outline):
                if name not in bound[kind]:
                    key = "action" if kind == "action" else "compensate"
                    self.problem(outline.saga.source, "unbound-handler",
                                  f"{kind} handler {name!r} is not registered",
                                  f"/steps/{index}/{key}", hint=suggest(name, bound[kind]))


def _handler_uses(outline: SagaOutline) -> Iterator[tuple[str, str, int]]:
    for slot in outline.slots:
        if isinstance(slot.step, ActionStep):
            for kind, name in slot.step.handlers():
                yield kind, name, slot.index


def _ancestors(deps: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in out:
            out[name] = set()  # a guard: cycles were refused, but never loop on one
            acc: set[str] = set()
            for dep in deps.get(name, ()):
                acc |= {dep} | visit(dep)
            out[name] = acc
        return out[name]

    for name in deps:
        visit(name)
    return out


def _depths(deps: dict[str, set[str]]) -> dict[str, int]:
    """Each step's stage: 0 without dependencies, else one more than its latest one."""
    out: dict[str, int] = {}

    def visit(name: str) -> int:
        if name not in out:
            out[name] = 0  # a guard: cycles were refused, but never loop on one
            out[name] = 1 + max((visit(d) for d in deps.get(name, ())), default=-1)
        return out[name]

    for name in deps:
        visit(name)
    return out


def _find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(deps.get(name, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in deps:
        if name not in state and (found := visit(name)):
            return found
    return None
