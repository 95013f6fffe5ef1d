"""A saga version's identity: its canonical JSON document and that document's fingerprint.

The store keeps both for every version runs have used. An edit made in place to a version
with runs (same name and version, different steps) would change what runs in flight do
between one step and the next, so the engine refuses to start on it; a definition whose
YAML is gone keeps running from the stored document.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from concordia.definitions.models import Saga

# Step fields the language gained after stores began pinning definitions, with their
# defaults: left out of the document while at their default, so a definition that uses
# none of them keeps the fingerprint it was pinned with (and runs in flight keep going).
_LATER_STEP_FIELDS: dict[str, Any] = {"if_": None, "catch": [], "for_each": None,
                                      "as_": "item", "concurrency": 1, "mode": "all",
                                      "checkpoints": False, "timeout_none": False}
# The same for the saga's own fields.
_LATER_SAGA_FIELDS: dict[str, Any] = {"max_duration": None}
# Fields the engine never reads, only the tools that check a definition (``concordia
# prove``): declaring them on a version that has runs changes nothing those runs do, so
# they are no part of the fingerprint at all.
_TOOL_STEP_FIELDS = ("checkpoints",)
_TOOL_SAGA_FIELDS = ("max_duration",)


def definition_document(saga: Saga) -> dict[str, Any]:
    """The saga as JSON, without where it was read from."""
    document: dict[str, Any] = saga.model_dump(mode="json", exclude={"source"})
    for key, default in _LATER_SAGA_FIELDS.items():
        if key in document and document[key] == default:
            del document[key]
    for step in document["steps"]:
        for key, default in _LATER_STEP_FIELDS.items():
            if key in step and step[key] == default:
                del step[key]
    return document


def fingerprint(saga: Saga) -> str:
    """The SHA-256 of the saga's canonical document, without what only the tools read:
    equal for definitions that run alike."""
    document = definition_document(saga)
    for key in _TOOL_SAGA_FIELDS:
        document.pop(key, None)
    for step in document["steps"]:
        for key in _TOOL_STEP_FIELDS:
            step.pop(key, None)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
