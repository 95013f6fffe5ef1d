"""Helpers for the explorer's tests: a definition tree in a temporary directory, and a
registry of plain handlers for any tree (each checkpoints when its step declares it)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep
from concordia.registry import Registry

CORPUS = Path(__file__).with_name("corpus")
CONSTRUCTS = Path(__file__).with_name("constructs")

EVENTS = """\
domain: t
events:
  - name: t.job.done
    version: 1
    description: a job finished
    payload_schema:
      job_id: {type: string, required: true}
    reliability: persistent
  - name: t.note.made
    version: 1
    description: something to say
    payload_schema:
      text: {type: string, required: true}
    reliability: persistent
"""

POLICY = """\
name: gate
version: 1
input_schema:
  amount: {type: number, required: true}
rules:
  - name: too_much
    when: input.amount > 1000
    decision: reject
    reason: over the limit
default:
  decision: approve
  reason: within the limit
"""


def write_tree(root: Path, sagas: dict[str, str], events: str = EVENTS,
               policy: str = POLICY) -> list[str]:
    """Write sagas (name -> YAML), the events and the policy under ``root``."""
    (root / "definitions" / "sagas").mkdir(parents=True, exist_ok=True)
    (root / "definitions" / "events").mkdir(parents=True, exist_ok=True)
    (root / "policies").mkdir(parents=True, exist_ok=True)
    for name, text in sagas.items():
        (root / "definitions" / "sagas" / f"{name}.yaml").write_text(textwrap.dedent(text))
    (root / "definitions" / "events" / "t.yaml").write_text(events)
    (root / "policies" / "gate.yaml").write_text(policy)
    return [str(root / "definitions"), str(root / "policies")]


def tree(root: Path, sagas: dict[str, str]) -> Catalog:
    return Catalog.load_strict(write_tree(root, sagas))


def plain_registry(catalog: Catalog) -> Registry:
    """A handler for every name the tree uses: an action returns ``{"ok": true, "n": 1,
    "list": ["a", "b", "c"]}`` after checkpointing if its step declares it; a
    compensation returns ``{}``."""
    registry = Registry()
    declared = {step.action for saga in catalog.sagas.values() for step in saga.steps
                if isinstance(step, ActionStep) and step.checkpoints}
    for kind, name, _, _ in catalog.handler_uses():
        if kind == "action" and name not in registry.action_names():
            registry.add_action(name, _action(name in declared))
        elif kind == "compensation" and name not in registry.compensation_names():
            registry.add_compensation(name, _compensation)
    return registry


def _action(checkpoints: bool) -> Any:
    def action(ctx: Any) -> dict[str, Any]:
        if checkpoints:
            ctx.checkpoint({"key": ctx.idempotency_key})
        return {"ok": True, "n": 1, "list": ["a", "b", "c"]}
    return action


def _compensation(ctx: Any) -> dict[str, Any]:
    return {}


@pytest.fixture(autouse=True)
def _quiet_handlers() -> None:
    """The reference handlers log every call; these tests run thousands (the root
    conftest gives the next test its own configuration back)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
