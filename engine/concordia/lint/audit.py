"""The gap audit: the catalog's findings that match the seed's gaps, plus handler checks.

Each finding has a rule id, a severity, file:line, the saga step it concerns, the impact
and a recommendation, so ``--format markdown`` can write a gap tracker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, AwaitStep
from concordia.definitions.problems import Problem
from concordia.lint.handlers import (
    Parsed,
    calls_missing_correlation,
    checkpoints,
    correlation_callees,
    is_stub,
    parse_handler,
    polling_loops,
)
from concordia.registry import Registry

# Catalog problem codes that are gaps of the seed's kinds, with their rule and advice.
_CATALOG_RULES: dict[str, tuple[str, str, str, str]] = {
    # code: (rule, title, impact, recommendation)
    "missing-compensation": (
        "CG-MISSING-COMPENSATION", "Side-effecting step without a compensation decision",
        "HIGH: a failed saga leaves this step's effect in place",
        "Name a compensation handler, or `compensate: none` with a reason"),
    "unknown-event": (
        "TX-UNKNOWN-EVENT", "Event missing from the taxonomy or misnamed",
        "HIGH: consumers never see the event, or see an unvalidated one",
        "Use the taxonomy's name (see the hint) or add the event to definitions/events/"),
    "policy-never-rejects": (
        "PL-AUTO-APPROVE", "Policy that approves everything",
        "MEDIUM: no business rule is enforced; compliance risk",
        "Add rules with `decision: reject` for what must not pass"),
    "await-without-timeout": (
        "AW-NO-TIMEOUT", "Await without a timeout",
        "MEDIUM: a run could wait forever for an event that never comes",
        "Add `timeout:` and `on_timeout:`"),
    "unbound-handler": (
        "HB-UNBOUND", "Handler named in YAML but not registered",
        "HIGH: the saga cannot run", "Register the handler or fix its name"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: str  # error | warning
    title: str
    message: str
    file: str
    line: int
    saga: str | None
    step: str | None
    impact: str
    recommendation: str

    def format_text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.saga}.{self.step}: " if self.saga and self.step else ""
        return f"{where}: {self.severity} {self.rule} {what}{self.message}"


def load_problems(catalog: Catalog) -> list[Problem]:
    """The catalog's problems that are no gap of their own: files that do not load, or
    break the schema, or the tree's other rules. The audit cannot vouch for them, so they
    are reported as ``concordia validate`` reports them, and their errors fail the audit."""
    return [p for p in catalog.problems if p.code not in _CATALOG_RULES]


def unchecked_handlers(catalog: Catalog, registry: Registry | None) -> list[str]:
    """The handler names the sagas use whose code the audit could not read: every one when
    no registry was given. Stub compensations and actions, polling loops and correlation
    ids that are not passed on are found only in handlers' code."""
    if registry is not None:
        return []
    return sorted({name for _, name, _, _ in catalog.handler_uses()})


def audit(catalog: Catalog, registry: Registry | None) -> list[Finding]:
    """Every gap the catalog and the handlers show, sorted by file and line."""
    findings: list[Finding] = []
    for p in catalog.problems:
        rule = _CATALOG_RULES.get(p.code)
        if rule is None:
            continue
        message = p.message + (f" ({p.hint})" if p.hint else "")
        findings.append(Finding(rule[0], "error", rule[1], message, p.file, p.line,
                                _saga_of(catalog, p.file), _step_of(catalog, p.file, p.pointer),
                                rule[2], rule[3]))
    findings += _orphan_events(catalog)
    if registry is not None:
        findings += _handler_findings(catalog, registry)
    findings.sort(key=lambda f: (f.file, f.line, f.rule))
    return findings


def _raw(catalog: Catalog, file: str) -> dict[str, Any]:
    # The raw document, so findings in sagas that failed validation still name them.
    parsed = catalog.files.get(file)
    data = parsed.document.data if parsed and parsed.document else None
    return data if isinstance(data, dict) and parsed and parsed.kind == "saga" else {}


def _saga_of(catalog: Catalog, file: str) -> str | None:
    name = _raw(catalog, file).get("name")
    return name if isinstance(name, str) else None


def _step_of(catalog: Catalog, file: str, pointer: str) -> str | None:
    parts = pointer.split("/")
    steps = _raw(catalog, file).get("steps")
    if len(parts) > 2 and parts[1] == "steps" and parts[2].isdigit() and isinstance(steps, list):
        index = int(parts[2])
        if index < len(steps) and isinstance(steps[index], dict):
            name = steps[index].get("name")
            return name if isinstance(name, str) else None
    return None


def _orphan_events(catalog: Catalog) -> list[Finding]:
    used: set[str] = set()
    for saga in catalog.sagas.values():
        if saga.trigger:
            used.add(saga.trigger.event)
        for emit in (*saga.on_complete, *saga.on_failure):
            used.add(emit.event)
        for step in saga.steps:
            used.update(e.event for e in step.emit)
            if isinstance(step, ActionStep):
                used.update(e.event for e in step.emit_on_compensate)
            if isinstance(step, AwaitStep):
                used.add(step.event)
    out = []
    for (name, version), event in sorted(catalog.events.items()):
        if name in used:
            continue
        parsed = catalog.files.get(event.file)
        line = 0
        if parsed and parsed.document:
            for ev, pointer in parsed.events:
                if ev is event:
                    line = parsed.document.locate(pointer + "/name")[0]
        out.append(Finding(
            "TX-ORPHAN-EVENT", "warning", "Taxonomy event no saga emits, awaits or is started by",
            f"event {name!r} v{version} is in the taxonomy but no saga uses it",
            event.file, line, None, None,
            "LOW: dead taxonomy entries drift from reality",
            "Emit or await it from a saga, or remove it from the taxonomy"))
    return out


def _handler_findings(catalog: Catalog, registry: Registry) -> list[Finding]:
    out: list[Finding] = []
    packages = {getattr(registry.get_action(n).fn, "__module__", "").split(".")[0]
                for n in registry.action_names()}
    callees: set[str] = set()
    for package in packages - {""}:
        callees |= correlation_callees(package)
    seen: set[tuple[str, str]] = set()
    for saga in sorted(catalog.sagas.values(), key=lambda s: s.key):
        for step in saga.steps:
            if not isinstance(step, ActionStep):
                continue
            if step.compensate and step.compensate in registry.compensation_names() and (
                    ("c", step.compensate) not in seen):
                seen.add(("c", step.compensate))
                parsed = parse_handler(registry.get_compensation(step.compensate).fn)
                if parsed is not None and is_stub(parsed):
                    spot = parsed.spot()
                    out.append(Finding(
                        "CG-STUB-COMPENSATION", "error", "Compensation that only logs",
                        f"compensation {step.compensate!r} only logs and returns a constant; "
                        "it undoes nothing", spot.file, spot.line, saga.name, step.name,
                        "HIGH: failed sagas leave this step's effect in place while "
                        "reporting it compensated",
                        "Undo the effect using ctx.result (the step's journaled result or "
                        "checkpoint); make it idempotent"))
            if step.action not in registry.action_names() or ("a", step.action) in seen:
                continue
            seen.add(("a", step.action))
            parsed = parse_handler(registry.get_action(step.action).fn)
            if parsed is None:
                continue
            if is_stub(parsed):
                spot = parsed.spot()
                out.append(Finding(
                    "CG-STUB-ACTION", "warning", "Action that only logs",
                    f"action {step.action!r} only logs and returns a constant; the work it "
                    "names is not done", spot.file, spot.line, saga.name, step.name,
                    "MEDIUM: the saga reports success for work that never happened",
                    "Call the system the step names and return what it produced"))
            for loop in polling_loops(parsed):
                spot = parsed.spot(loop)
                out.append(Finding(
                    "AW-POLLING", "warning", "Action that polls in a loop",
                    f"action {step.action!r} sleeps inside a loop: it waits by polling",
                    spot.file, spot.line, saga.name, step.name,
                    "LOW-MEDIUM: blocks a worker for the whole wait; scales poorly",
                    "Split the step: start the work, then an `await` step on the completion "
                    "event, with a timeout"))
            if step.checkpoints:
                out += _checkpoint_finding(saga.name, step, parsed)
            for call, name in calls_missing_correlation(parsed, callees):
                spot = parsed.spot(call)
                out.append(Finding(
                    "TR-NO-CORRELATION", "warning", "Correlation id not passed on",
                    f"action {step.action!r} calls {name}() without correlation_id, which "
                    "it accepts", spot.file, spot.line, saga.name, step.name,
                    "MEDIUM: the external call cannot be traced back to this saga run",
                    "Pass correlation_id=ctx.correlation_id"))
    return out


def _checkpoint_finding(saga: str, step: ActionStep, parsed: Parsed) -> list[Finding]:
    """A step that declares ``checkpoints: true`` whose handler does not checkpoint."""
    found = checkpoints(parsed)
    if found == "yes":
        return []
    spot = parsed.spot()
    severity = "warning" if found == "maybe" else "error"
    how = ("hands its context to another call, which may checkpoint: check that it does"
           if found == "maybe" else "never calls ctx.checkpoint")
    return [Finding(
        "CP-NO-CHECKPOINT", severity, "Declared checkpoint the handler does not make",
        f"step {step.name!r} declares `checkpoints: true`, but action {step.action!r} {how}",
        spot.file, spot.line, saga, step.name,
        "HIGH: a failure after the effect is not compensated, while `concordia prove` "
        "counts on it",
        "Call ctx.checkpoint(...) before the side effect, or remove `checkpoints: true`")]


def render_markdown(findings: Sequence[Finding], title: str = "Compensation gaps tracker",
                    unloaded: Sequence[Problem] = (), unchecked: Sequence[str] = ()) -> str:
    """A gap tracker shaped like the audit document the project was born from."""
    lines = [f"# {title}", "", f"**Findings**: {len(findings)} "
             f"({sum(f.severity == 'error' for f in findings)} errors, "
             f"{sum(f.severity == 'warning' for f in findings)} warnings)", ""]
    if unchecked:
        lines += ["## Handlers not checked", "",
                  f"{unchecked_summary(len(unchecked))}:", ""]
        lines += [f"- `{name}`" for name in unchecked]
        lines.append("")
    if unloaded:
        lines += ["## Definitions that do not load", "",
                  "These are not audited until fixed (as `concordia validate` reports them):",
                  ""]
        lines += [f"- `{p.format_text()}`" for p in unloaded]
        lines.append("")
    lines += ["---", ""]
    for i, f in enumerate(findings, start=1):
        what = f"{f.saga} - {f.title}" if f.saga else f.title
        lines += [
            f"### GAP-{i:03d}: {what}", "",
            f"**Rule**: `{f.rule}` ({f.severity})  ",
            f"**File**: `{f.file}`" + (f" (line {f.line})" if f.line else "") + "  ",
            f"**Step**: `{f.step}`  " if f.step else "**Step**: -  ",
            f"**Current State**: {f.message}", "",
            f"**Impact**: {f.impact}", "",
            f"**Recommendation**: {f.recommendation}", "",
            "**Status**: Open", "", "---", ""]
    if not findings:
        lines.append(no_gaps_line(unloaded, unchecked).capitalize() + ".")
    return "\n".join(lines) + "\n"


def unchecked_summary(count: int) -> str:
    """What it means that ``count`` handlers were not read, and how to have them read."""
    return (f"{count} handler(s) the sagas name were not checked (stub compensations and "
            "actions, polling loops and correlation ids show only in their code); "
            "give --handlers MODULE")


def no_gaps_line(unloaded: Sequence[Problem], unchecked: Sequence[str]) -> str:
    """The verdict when nothing was found, saying what was not looked at."""
    if any(p.severity == "error" for p in unloaded):
        return "no gaps found in the definitions that load"
    if unchecked:
        return "no gaps found in the definitions; their handlers were not checked"
    return "no gaps found"
