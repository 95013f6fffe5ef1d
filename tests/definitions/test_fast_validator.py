"""The compiled (jsonschema-rs) validator agrees with jsonschema, document for document.

It only ever decides whether jsonschema needs to run, so the property that matters is
"fast says valid => jsonschema finds no error"; for the shipped schemas the two verdicts
are in fact identical, and that is what these tests hold it to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from concordia.definitions.documents import detect_kind
from concordia.definitions.schema import KINDS, Kind, fast_validator, schema_document, validator
from concordia.definitions.yamlsafe import YamlLoadError, load_yaml_bytes
from tests.conftest import DEFINITIONS, POLICIES

BAD = Path(__file__).parent / "bad"
SHIPPED = {str(p): yaml.safe_load(p.read_text()) for root in (DEFINITIONS, POLICIES)
           for p in sorted(Path(root).rglob("*.yaml"))}


def _agree(kind: Kind, data: Any) -> None:
    expected = not any(True for _ in validator(kind).iter_errors(data))
    assert fast_validator(kind).is_valid(data) is expected, (kind, data)


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_shipped_definitions_pass_both(path: str) -> None:
    data = SHIPPED[path]
    kind = detect_kind(data)
    assert kind is not None
    assert fast_validator(kind).is_valid(data)
    _agree(kind, data)


@pytest.mark.parametrize("path", sorted(p.name for p in BAD.glob("*.yaml")))
def test_bad_corpus_gets_the_same_verdict(path: str) -> None:
    try:
        data = load_yaml_bytes((BAD / path).read_bytes(), path).data
    except YamlLoadError:
        return  # never reaches schema validation
    for kind in KINDS:  # whatever it claims to be, every schema must agree
        _agree(kind, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-3, max_value=300)
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
        ["", "x", "none", "saga", "uuid", "persistent", "approve", "reject", "a.b.c",
         "Bad.Name", "5m", "250ms", "5 minutes", "billing.charge", "name", "steps"])
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "version", "type", "steps", "action", "await", "policy",
                         "compensate", "reason", "timeout", "events", "payload_schema",
                         "rules", "default", "decision", "when", "items", "fields",
                         "required", "enum", "depends_on", "kind", "x-y", "1a"]) | st.text(
                             max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _mutate(data: Any, path: tuple[Any, ...], how: str, new: Any) -> Any:
    if not path:
        return new if how == "replace" else data
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        copy: Any = dict(data)
        if not rest and how == "delete":
            del copy[head]
        elif not rest and how == "add" and isinstance(new, dict):
            copy.update(new)
        else:
            copy[head] = _mutate(data[head], rest, how, new)
        return copy
    copy = list(data)
    if not rest and how == "delete":
        del copy[head]
    elif not rest and how == "add":
        copy.insert(head, new)
    else:
        copy[head] = _mutate(data[head], rest, how, new)
    return copy


@settings(max_examples=300, deadline=None, database=None)
@given(source=st.sampled_from(sorted(SHIPPED)), data=st.data())
def test_structural_mutations_get_the_same_verdict(source: str, data: st.DataObject) -> None:
    document = SHIPPED[source]
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(document)))
        how = data.draw(st.sampled_from(["replace", "delete", "add"]))
        document = _mutate(document, path, how, data.draw(json_values))
    for kind in KINDS:
        _agree(kind, document)


@settings(max_examples=200, deadline=None, database=None)
@given(value=json_values)
def test_arbitrary_values_get_the_same_verdict(value: Any) -> None:
    for kind in KINDS:
        _agree(kind, value)


def test_recursive_field_specs() -> None:
    check = fast_validator("event").is_valid
    nested = {"name": "a.b.c", "version": 1, "reliability": "transient", "payload_schema": {
        "items": {"type": "list", "items": {"type": "map", "fields": {
            "deep": {"type": "list", "items": {"type": "map", "fields": {
                "leaf": {"type": "uuid", "required": True}}}}}}}}}
    assert check(nested)
    broken = yaml.safe_load(yaml.safe_dump(nested).replace("leaf", "le-af"))
    assert not check(broken)
    assert schema_document("event")["$defs"]["fieldSpec"]["properties"]["fields"]["$ref"] == (
        "#/$defs/compactSchema")
