"""The DSL reference (``docs/reference.md``), generated from the shipped JSON Schemas.

Every key's meaning, example and default are written in the schema itself (editors show
them on hover); this module lays them out with each key's type and constraints, once per
key: shared parts (retry policies, emitted events, compact payload fields) get a section
of their own. Regenerate after changing a schema::

    python -m concordia.definitions.reference > docs/reference.md

A test fails when a schema key has no description or example, or when the file is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from concordia.definitions.schema import Kind, schema_document

# Shared definitions documented once, in their own section.
# $defs name -> (section title, the keys that use it, the path prefix of its keys).
SHARED = {
    "retry": ("Retry policies", "`defaults.retry`, `defaults.compensation_retry`, "
                                "`steps[].retry`, `steps[].compensation_retry`", "retry."),
    "backoff": ("Backoff", "`backoff` of a retry policy", "retry.backoff."),
    "emit": ("Emitted events", "each item of `steps[].emit`, `steps[].emit_on_compensate`, "
                               "`on_complete`, `on_failure`", "emit[]."),
    "event": ("Event entries", "each item of a domain file's `events`, or a whole file on its "
                               "own", "events[]."),
    "fieldSpec": ("Compact payload fields", "each field of a compact `input_schema` or "
                                            "`payload_schema`", "<field>."),
}
# $defs names -> how a key of that kind is named in the "type" line.
TYPE_NAMES = {
    "identifier": "identifier", "handlerName": "handler name", "duration": "duration",
    "timeout": "duration or `none`",
    "expression": "CEL expression", "mapping": "mapping of CEL expressions",
    "retry": "retry policy", "backoff": "backoff", "emit": "emitted event",
    "emitList": "list of emitted events", "step": "step", "fieldSpec": "field spec",
    "compactSchema": "compact schema", "payloadSchema": "payload schema",
    "eventName": "event name", "event": "event",
}
VALUE_TYPES = ("duration", "timeout", "identifier", "handlerName", "eventName", "expression",
               "mapping", "payloadSchema")

_INTRO = """\
# Concordia DSL reference

Every key of a saga, an event (taxonomy entry) and a policy: what it means, its type,
its default and an example. Generated from the JSON Schemas shipped in
`engine/concordia/definitions/schemas/` (`concordia schema saga|event|policy` prints
them); do not edit by hand — edit the schema's `description`, `default` and `examples`
and run `python -m concordia.definitions.reference > docs/reference.md`.

How the pieces work together — awaits, timeouts, the taxonomy, envelopes, retries — is in
the [guide](guide.md).

A key path like `steps[].retry` means the `retry` key of any item of `steps`.
"""


@dataclass(frozen=True)
class Entry:
    """One key as the reference shows it."""

    path: str
    type: str
    required: bool
    default: Any
    description: str
    example: Any
    has_default: bool


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) and ref.startswith("#/$defs/") else None


def type_words(node: dict[str, Any]) -> str:
    """A schema node's type in words, with its bounds."""
    name = _ref_name(node)
    if name is not None:
        return TYPE_NAMES.get(name, name)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    kind = node.get("type")
    if kind == "array":
        items = node.get("items", {})
        inner = type_words(items) if isinstance(items, dict) and items else "values"
        words = f"list of {inner}"
    elif kind == "object":
        words = "mapping"
    elif kind == "integer":
        words = "integer"
    elif kind == "number":
        words = "number"
    elif kind == "string":
        words = "string"
    elif kind == "boolean":
        words = "boolean"
    elif "oneOf" in node:
        words = " or ".join(type_words(o) for o in node["oneOf"])
    else:
        words = "any value"
    bounds = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if key in node:
            bounds.append(f"{sign} {node[key]}")
    for key, what in (("minItems", "at least {} items"), ("maxItems", "at most {} items"),
                      ("minLength", "at least {} characters"),
                      ("maxLength", "at most {} characters")):
        if key in node and not (key == "minLength" and node[key] == 1):
            bounds.append(what.format(node[key]))
    return words + (f" ({', '.join(bounds)})" if bounds else "")


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    name = _ref_name(node)
    if name is None:
        return node
    return {**doc["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}


def entries(doc: dict[str, Any], node: dict[str, Any], prefix: str = "") -> Iterator[Entry]:
    """The keys under ``node`` (an object schema), depth first, shared parts not expanded."""
    required = set(node.get("required", []))
    for key, prop in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield Entry(path, type_words(prop), key in required, prop.get("default"),
                    str(prop.get("description", "")), (prop.get("examples") or [None])[0],
                    "default" in prop)
        if _ref_name(prop) in SHARED:
            continue
        resolved = _resolve(doc, prop)
        if resolved.get("type") == "object" or "properties" in resolved:
            yield from entries(doc, resolved, f"{path}.")
        items = resolved.get("items")
        if resolved.get("type") == "array" and isinstance(items, dict):
            if _ref_name(items) in SHARED:
                continue
            inner = _resolve(doc, items)
            if "properties" in inner:
                yield from entries(doc, inner, f"{path}[].")


def every_key(kind: Kind) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, property schema) for every key anywhere in a schema, for completeness checks."""
    doc = schema_document(kind)

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            for key, prop in (node.get("properties") or {}).items():
                yield f"{where}.{key}", prop
            for key, value in node.items():
                # An `if` only tests a document (is this payload schema a full one?);
                # its properties are no keys anyone writes.
                if key not in ("properties", "if"):
                    yield from walk(value, f"{where}/{key}")
            for key, value in (node.get("properties") or {}).items():
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    yield from walk(doc, kind)


def _example(path: str, value: Any) -> str:
    key = path.rsplit(".", 1)[-1].removesuffix("[]")
    if key.startswith("<"):
        key = "order_id"
    if isinstance(value, dict | list):
        text = yaml.safe_dump({key: value}, default_flow_style=None, sort_keys=False,
                              allow_unicode=True, width=88).rstrip()
    else:
        text = f"{key}: {_inline(value)}"
    return "```yaml\n" + text + "\n```"


def _render(entry: Entry) -> list[str]:
    facts = [f"*{entry.type}*", "**required**" if entry.required else "optional"]
    if entry.has_default:
        facts.append(f"default `{_inline(entry.default)}`")
    lines = [f"### `{entry.path}`", "", " · ".join(facts), "", entry.description, ""]
    if entry.example is not None:
        lines += [_example(entry.path, entry.example), ""]
    return lines


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _section(title: str, intro: str, items: Iterator[Entry]) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    for entry in items:
        lines += _render(entry)
    return lines


def reference_markdown() -> str:
    """The whole reference, as Markdown."""
    saga, event, policy = (schema_document(k) for k in ("saga", "event", "policy"))
    out = [_INTRO]
    out += _section("Sagas", "A saga file (`definitions/sagas/*.yaml`) defines one version of "
                    "one saga. Schema: `" + saga["$id"] + "`.", entries(saga, saga))
    for name in ("retry", "backoff", "emit"):
        title, used, prefix = SHARED[name]
        node = saga["$defs"][name]
        out += _section(title, f"{node['description']} Used by {used}.",
                        entries(saga, node, prefix))
    domain = event["then"]
    out += _section("Events", "The event taxonomy (`definitions/events/*.yaml`): one event a "
                    "file, or a domain file listing several under `events:`. Schema: `"
                    + event["$id"] + "`.", entries(event, domain))
    title, used, prefix = SHARED["event"]
    out += _section(title, event["$defs"]["event"]["description"] + f" Used as {used}.",
                    entries(event, event["$defs"]["event"], prefix))
    out += _section("Policies", "A policy file (`policies/*.yaml`) defines one version of one "
                    "policy. Schema: `" + policy["$id"] + "`.", entries(policy, policy))
    title, used, prefix = SHARED["fieldSpec"]
    field = saga["$defs"]["fieldSpec"]
    out += _section(title, f"{field['description']} Used as {used}. A payload schema is "
                    f"written in {saga['$defs']['payloadSchema']['description'][0].lower()}"
                    f"{saga['$defs']['payloadSchema']['description'][1:]}",
                    entries(saga, field, prefix))
    out += ["## Value types", ""]
    for name in VALUE_TYPES:
        node = saga["$defs"].get(name) or event["$defs"][name]
        out += [f"### {TYPE_NAMES[name]}", "", str(node["description"]), ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:  # pragma: no cover - exercised by the docs test through the output
    print(reference_markdown(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
