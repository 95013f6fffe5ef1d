"""The DSL reference and guide stay true to the schemas, the models and the engine.

- every key of every shipped schema has a meaning and an example (a new key without them
  fails here), and the generated ``docs/reference.md`` is the checked-in one;
- each example is valid for its key, each default is the model's default;
- every YAML and JSON example of the guide validates;
- the README's first screen is untouched and links the docs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from concordia.definitions import Catalog, models
from concordia.definitions.documents import parse_bytes
from concordia.definitions.durations import parse_duration
from concordia.definitions.reference import every_key, reference_markdown
from concordia.definitions.schema import KINDS, schema_document
from concordia.events.envelope import Envelope
from tests.conftest import DEFINITIONS, ROOT

DOCS = Path(ROOT, "docs")
REFERENCE = DOCS / "reference.md"
GUIDE = DOCS / "guide.md"


@pytest.mark.parametrize("kind", KINDS)
def test_every_schema_key_has_a_meaning_and_an_example(kind: str) -> None:
    missing = [where for where, prop in every_key(kind)  # type: ignore[arg-type]
               if not str(prop.get("description", "")).strip() or not prop.get("examples")]
    assert missing == [], "keys without description or examples: " + ", ".join(missing)


def test_reference_is_generated_from_the_schemas() -> None:
    assert REFERENCE.read_text("utf-8") == reference_markdown(), (
        "docs/reference.md is stale: python -m concordia.definitions.reference "
        "> docs/reference.md")


def test_every_saga_key_has_an_entry_in_the_reference() -> None:
    text = REFERENCE.read_text("utf-8")
    headings = set(re.findall(r"^### `([^`]+)`$", text, re.MULTILINE))
    step_keys = schema_document("saga")["$defs"]["step"]["properties"]
    assert {f"steps[].{k}" for k in step_keys} <= headings
    assert {f"retry.{k}" for k in schema_document("saga")["$defs"]["retry"]["properties"]} <= (
        headings)
    assert {f"rules[].{k}" for k in
            schema_document("policy")["properties"]["rules"]["items"]["properties"]} <= headings
    assert {f"events[].{k}" for k in schema_document("event")["$defs"]["event"]["properties"]} <= (
        headings)


@pytest.mark.parametrize("kind", KINDS)
def test_every_example_is_valid_for_its_key(kind: str) -> None:
    root = Draft202012Validator(schema_document(kind))  # type: ignore[arg-type]
    for where, prop in every_key(kind):  # type: ignore[arg-type]
        for example in prop.get("examples", []):
            errors = list(root.evolve(schema=prop).iter_errors(example))
            assert errors == [], f"{where}: {example!r}: {errors[0].message}"


def _default(where: str) -> Any:
    saga = schema_document("saga")["$defs"]
    table = {"retry.attempts": saga["retry"]["properties"]["attempts"],
             "retry.retryable": saga["retry"]["properties"]["retryable"],
             "retry.non_retryable": saga["retry"]["properties"]["non_retryable"],
             "backoff.factor": saga["backoff"]["properties"]["factor"],
             "backoff.jitter": saga["backoff"]["properties"]["jitter"],
             "backoff.initial": saga["backoff"]["properties"]["initial"],
             "backoff.max": saga["backoff"]["properties"]["max"],
             "step.on_timeout": saga["step"]["properties"]["on_timeout"]}
    return table[where]["default"]


def test_documented_defaults_are_the_models_defaults() -> None:
    retry = models.RetryPolicy()
    assert _default("retry.attempts") == retry.attempts
    assert tuple(_default("retry.retryable")) == retry.retryable
    assert tuple(_default("retry.non_retryable")) == retry.non_retryable
    assert _default("backoff.factor") == retry.backoff.factor
    assert _default("backoff.jitter") == retry.backoff.jitter
    assert parse_duration(_default("backoff.initial")) == retry.backoff.initial
    assert parse_duration(_default("backoff.max")) == retry.backoff.max
    assert _default("step.on_timeout") == models.AwaitStep(name="w", event="a.b.c").on_timeout
    # The compensation default the prose states (5 attempts, 1s to 1m) is the model's.
    comp = models.DEFAULT_COMPENSATION_RETRY
    assert (comp.attempts, comp.backoff.initial, comp.backoff.max) == (5, 1.0, 60.0)
    described = schema_document("saga")["$defs"]["step"]["properties"]["compensation_retry"]
    assert "5 attempts, 1s to 1m" in described["description"]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text("utf-8"), re.DOTALL)


@pytest.mark.parametrize("index", range(len(_blocks(GUIDE, "yaml"))))
def test_guide_yaml_examples_validate(index: int, tmp_path: Path) -> None:
    block = _blocks(GUIDE, "yaml")[index]
    parsed = parse_bytes(block.encode(), f"guide-{index}.yaml")
    assert parsed.problems == [], [p.format_text() for p in parsed.problems]
    assert parsed.sagas or parsed.events or parsed.policies


def test_guide_envelope_example_is_a_valid_envelope() -> None:
    [block] = _blocks(GUIDE, "json")
    envelope = Envelope.from_dict(json.loads(block))
    assert envelope.version == 1


def test_guide_lists_every_required_envelope_attribute() -> None:
    text = GUIDE.read_text("utf-8")
    required = text.split("**required**", 1)[1].split("and these are optional", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", required, re.MULTILINE))
    # What the envelope refuses when absent is exactly what the guide lists as required.
    from concordia.events.envelope import read_envelope

    _, problems = read_envelope({})
    assert listed == {p.attribute for p in problems}
    assert listed == {"specversion", "id", "source", "type", "time"}


def test_guide_awaits_validate_against_the_shipped_taxonomy(tmp_path: Path) -> None:
    # The guide's sagas that await shipped events resolve against the shipped tree.
    block = next(b for b in _blocks(GUIDE, "yaml") if "await: ml.training.completed" in b)
    path = tmp_path / "training.yaml"
    path.write_text(block)
    problems = [p for p in Catalog.load([str(path), DEFINITIONS]).problems
                if p.file == str(path)]
    assert problems == []


def test_readme_first_screen_is_kept_and_links_the_docs() -> None:
    readme = Path(ROOT, "README.md").read_text("utf-8")
    assert readme.startswith("# Concordia\n\nA declarative saga engine for Python.")
    assert "(docs/reference.md)" in readme
    assert "(docs/guide.md)" in readme
    assert "(docs/operations.md)" in readme
    for page in ("reference.md", "guide.md", "operations.md"):
        assert (DOCS / page).is_file()
