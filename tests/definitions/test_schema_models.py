"""The shipped JSON Schemas and the pydantic models speak the same vocabulary.

A key the schema accepts but no model field holds would be silently dropped; a field the
models have but the schema refuses could never be written. The only differences allowed
are the documented ones: a step's ``await`` is ``AwaitStep.event``; ``compensate: none``
becomes ``compensate=None, compensate_none=True``; an event's ``source`` is held by
``EventDef.source_name`` (alias ``source``); ``kind`` selects the schema and model rather
than being stored; ``source``/``file`` on sagas, policies and events record where a
definition was loaded from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from concordia.cli import main
from concordia.definitions import models
from concordia.definitions.documents import _STEP_KEYS, detect_kind
from concordia.definitions.durations import DURATION_PATTERN
from concordia.definitions.payload import _PASSTHROUGH, COMPACT_TYPES
from concordia.definitions.schema import KINDS, Kind, schema_document
from tests.conftest import DEFINITIONS, POLICIES

SAGA = schema_document("saga")
EVENT = schema_document("event")
POLICY = schema_document("policy")
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Model fields that are bookkeeping or derived, never written in YAML.
BOOKKEEPING = {"source", "file"}


def _props(schema: dict[str, Any]) -> set[str]:
    return set(schema["properties"])


def _required(schema: dict[str, Any]) -> set[str]:
    return set(schema.get("required", []))


def _yaml_names(model: type[BaseModel]) -> set[str]:
    """The keys a model accepts, spelled as in YAML (by alias where it has one)."""
    return {info.alias or name for name, info in model.model_fields.items()}


def _yaml_required(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()
            if info.is_required()}


# (what, schema object, model, model fields the schema does not spell that way)
VOCABULARY = [
    ("saga", SAGA, models.Saga, {"source"}),
    ("trigger", SAGA["properties"]["trigger"], models.Trigger, set()),
    ("defaults", SAGA["properties"]["defaults"], models.Defaults, set()),
    ("retry", SAGA["$defs"]["retry"], models.RetryPolicy, set()),
    ("backoff", SAGA["$defs"]["backoff"], models.Backoff, set()),
    ("emit", SAGA["$defs"]["emit"], models.Emit, set()),
    ("catch", SAGA["$defs"]["step"]["properties"]["catch"]["items"], models.CatchClause,
     set()),
    ("event", EVENT["$defs"]["event"], models.EventDef, {"file"}),
    ("policy", POLICY, models.Policy, {"source"}),
    ("rule", POLICY["properties"]["rules"]["items"], models.Rule, set()),
    ("default decision", POLICY["properties"]["default"], models.DefaultDecision, set()),
]


@pytest.mark.parametrize(("what", "schema", "model", "extra"), VOCABULARY,
                         ids=[v[0] for v in VOCABULARY])
def test_schema_properties_match_model_fields(
        what: str, schema: dict[str, Any], model: type[BaseModel], extra: set[str]) -> None:
    assert extra <= BOOKKEEPING
    # `kind` picks the schema and the model; it is not stored on the model.
    assert _props(schema) - {"kind"} == _yaml_names(model) - extra, what
    assert _required(schema) == _yaml_required(model), what


def test_step_vocabulary_matches_the_four_step_models() -> None:
    step = SAGA["$defs"]["step"]
    renamed = {"event": "await"}  # AwaitStep.event is written `await:`
    # set from which key is present, or from `none` (`compensate: none`, `timeout: none`)
    derived = {"kind", "compensate_none", "timeout_none"}
    per_kind: dict[str, type[BaseModel]] = {
        "action": models.ActionStep,
        "await": models.AwaitStep,
        "policy": models.PolicyStep,
        "saga": models.SagaStep,
    }
    union: set[str] = set()
    for kind, model in per_kind.items():
        names = {renamed.get(n, n) for n in _yaml_names(model)} - derived
        # The keys the per-kind check allows are exactly what the model holds.
        assert names == _STEP_KEYS[kind], kind
        required = {renamed.get(n, n) for n in _yaml_required(model)}
        assert required == {"name", kind}, kind
        union |= names
    assert union == _props(step)
    assert _required(step) == {"name"}
    assert [set(alt["required"]) for alt in step["oneOf"]] == [
        {"action"}, {"await"}, {"policy"}, {"saga"}]


def test_event_source_alias_and_compensate_none() -> None:
    event = models.EventDef.model_validate({
        "name": "shop.order.created", "version": 1, "reliability": "persistent",
        "payload_schema": {"order_id": {"type": "uuid"}}, "source": "shop-service"})
    assert event.source_name == "shop-service"
    step = models.step_from_document({"name": "lookup", "action": "catalog.lookup",
                                      "compensate": "none", "reason": "read-only"})
    assert isinstance(step, models.ActionStep)
    assert (step.compensate, step.compensate_none, step.compensable) == (None, True, False)
    waiting = models.step_from_document({"name": "wait", "await": "ml.run.completed",
                                         "timeout": "5m"})
    assert isinstance(waiting, models.AwaitStep)
    assert (waiting.event, waiting.timeout) == ("ml.run.completed", 300.0)
    forever = models.step_from_document({"name": "wait", "await": "ml.run.completed",
                                         "timeout": "none"})
    assert isinstance(forever, models.AwaitStep)
    assert (forever.timeout, forever.timeout_none) == (None, True)


def test_event_domain_file_wraps_the_event_schema() -> None:
    then = EVENT["then"]
    assert _props(then) == {"kind", "domain", "description", "events"}
    assert then["properties"]["events"]["items"] == {"$ref": "#/$defs/event"}
    assert EVENT["else"] == {"$ref": "#/$defs/event"}


@pytest.mark.parametrize("kind", KINDS)
def test_compact_payload_notation_matches_the_compiler(kind: Kind) -> None:
    defs = schema_document(kind)["$defs"]
    field_spec = defs["fieldSpec"]
    assert set(field_spec["properties"]["type"]["enum"]) == set(COMPACT_TYPES)
    assert set(field_spec["properties"]["items"]["oneOf"][0]["enum"]) == set(COMPACT_TYPES)
    structural = {"type", "required", "items", "fields", "nullable"}
    assert _props(field_spec) - structural == set(_PASSTHROUGH)


def test_the_three_schemas_share_one_payload_notation() -> None:
    # Copied into each schema so that each is self-contained for editors; keep them equal.
    for name in ("fieldSpec", "compactSchema", "payloadSchema"):
        assert SAGA["$defs"][name] == EVENT["$defs"][name] == POLICY["$defs"][name], name


def test_duration_pattern_matches_the_parser() -> None:
    duration = SAGA["$defs"]["duration"]
    assert duration["oneOf"][0]["pattern"] == DURATION_PATTERN


@pytest.mark.parametrize("kind", KINDS)
def test_schema_command_prints_a_versioned_draft_2020_12_schema(
        kind: Kind, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", kind]) == 0
    printed = json.loads(capsys.readouterr().out)
    Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == DRAFT_2020_12
    assert re.fullmatch(rf"https://[\w.-]+/schemas/{kind}/v\d+\.json", printed["$id"])
    assert printed == schema_document(kind)


def test_schema_command_refuses_an_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["schema", "workflow"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_shipped_definitions_validate_against_their_schema_and_name_it() -> None:
    """Editors read the `yaml-language-server` line; it must point at the right schema."""
    for path in sorted([*Path(DEFINITIONS).rglob("*.yaml"), *Path(POLICIES).rglob("*.yaml")]):
        text = path.read_text("utf-8")
        data = yaml.safe_load(text)
        kind = detect_kind(data)
        assert kind is not None, path
        errors = list(Draft202012Validator(schema_document(kind)).iter_errors(data))
        assert errors == [], (path, [e.message for e in errors])
        first = text.splitlines()[0]
        match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        assert match, f"{path}: first line should name the schema for editors"
        target = (path.parent / match.group(1)).resolve()
        assert target.name == f"{kind}.v1.json", path
        assert target.is_file(), path
