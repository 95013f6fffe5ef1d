"""Readable tables for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from concordia.cli.report import render_text
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, AwaitStep, PolicyStep, SagaStep


def catalog_table(catalog: Catalog, console: Console | None = None) -> None:
    """Print every saga, event and policy of ``catalog``, then its problems."""
    console = console or Console()
    sagas = Table(title="Sagas", title_justify="left")
    for col in ("saga", "v", "trigger", "step", "does", "undone by"):
        sagas.add_column(col)
    for saga in sorted(catalog.sagas.values(), key=lambda s: s.key):
        for i, step in enumerate(saga.steps):
            if isinstance(step, ActionStep):
                does, undo = step.action, step.compensate or "none: " + (step.reason or "")
                if step.for_each is not None:
                    does += f" for each in {step.for_each}"
            elif isinstance(step, AwaitStep):
                does, undo = f"await {step.event}", "-"
            elif isinstance(step, PolicyStep):
                does, undo = f"policy {step.policy}", "-"
            elif isinstance(step, SagaStep):
                does, undo = f"saga {step.saga}", "its own compensations"
            if step.if_ is not None:
                does = f"if {step.if_}: {does}"
            first = i == 0
            sagas.add_row(saga.name if first else "", str(saga.version) if first else "",
                          (saga.trigger.event if saga.trigger else "-") if first else "",
                          step.name, does, undo, end_section=i == len(saga.steps) - 1)
    console.print(sagas)
    events = Table(title="Event taxonomy", title_justify="left")
    for col in ("event", "v", "reliability", "fields (* required)"):
        events.add_column(col)
    for event in sorted(catalog.events.values(), key=lambda e: (e.name, e.version)):
        fields, required, _ = event.field_names()
        events.add_row(event.name, str(event.version), event.reliability,
                       ", ".join(f + ("*" if f in required else "") for f in sorted(fields)))
    console.print(events)
    policies = Table(title="Policies", title_justify="left")
    for col in ("policy", "v", "rules", "default"):
        policies.add_column(col)
    for policy in sorted(catalog.policies.values(), key=lambda p: (p.name, p.version)):
        policies.add_row(policy.name, str(policy.version),
                         "\n".join(f"{r.name}: {r.decision}" for r in policy.rules),
                         policy.default.decision)
    console.print(policies)
    console.print(render_text(catalog.problems))
