"""Taxonomy evolution, as a schema registry sees it: each change to an event's payload
schema classified as compatible or breaking, for producers and for consumers.

A change breaks **producers** when an event a producer built against the old schema may
no longer validate against the new one (a newly required field, an optional field made
required, a narrowed type: ``number`` to ``integer``, an enum that lost values, a tighter
bound or pattern; a field removed from a closed schema). It breaks **consumers** when an
event valid against the new schema may not be what a consumer written for the old one
expects (a removed field, a required field made optional, a widened type). Adding an
optional field breaks neither. Removing an event version breaks both.

Only an existing (name, version) must stay compatible: a new version of an event may
break anything (that is what versions are for), and sagas that name the old version keep
validating against it, so a new version is reported, never failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from concordia.definitions.models import EventDef

_WIDER = {"integer": {"number"}}  # a value of the key type is also one of these
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two versions of an event's schema."""

    event: str
    version: int
    path: str  # the field, e.g. ``candidates[].score``; "" for the event itself
    what: str
    producers: bool  # breaks producers
    consumers: bool  # breaks consumers
    new_version: bool = False  # a change that comes with a new version: allowed

    @property
    def breaking(self) -> bool:
        return (self.producers or self.consumers) and not self.new_version

    @property
    def verdict(self) -> str:
        if not (self.producers or self.consumers):
            return "compatible"
        whom = " and ".join(w for w, hit in (("producers", self.producers),
                                             ("consumers", self.consumers)) if hit)
        return f"breaks {whom}"

    def format_text(self) -> str:
        label = "BREAKING" if self.breaking else ("new-version" if self.new_version
                                                   else "ok")
        where = f"{self.event} v{self.version}" + (f" {self.path}" if self.path else "")
        return f"{label:<11} {where}: {self.what} ({self.verdict})"


def compare_taxonomies(old: Mapping[tuple[str, int], EventDef],
                       new: Mapping[tuple[str, int], EventDef]) -> list[Change]:
    """Every change from ``old`` to ``new`` (both keyed by (name, version))."""
    changes: list[Change] = []
    for key in sorted(set(old) | set(new)):
        name, version = key
        if key in old and key in new:
            changes += compare_events(old[key], new[key])
        elif key in old:
            changes.append(Change(name, version, "", "event version removed", True, True))
        else:
            earlier = [v for (n, v) in old if n == name and v < version]
            if not earlier:
                changes.append(Change(name, version, "", "new event", False, False))
                continue
            base = old[(name, max(earlier))]
            found = compare_events(base, new[key])
            changes.append(Change(name, version, "", f"new version of v{base.version}",
                                  False, False, new_version=True))
            changes += [Change(c.event, version, c.path, c.what, c.producers, c.consumers,
                               new_version=True) for c in found]
    return changes


def compare_events(old: EventDef, new: EventDef) -> list[Change]:
    changes = [Change(new.name, new.version, path, what, producers, consumers)
               for path, what, producers, consumers in
               _schema(old.payload_schema, new.payload_schema, "")]
    if old.reliability != new.reliability:
        lossy = new.reliability == "transient"
        changes.append(Change(new.name, new.version, "",
                              f"reliability {old.reliability} -> {new.reliability}",
                              False, lossy))
    return changes


Found = tuple[str, str, bool, bool]  # (path, what, breaks producers, breaks consumers)


def _schema(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Found]:
    yield from _types(old, new, path)
    if "properties" in old or "properties" in new:
        yield from _object(old, new, path)
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        yield from _schema(old["items"], new["items"], f"{path}[]")
    yield from _constraints(old, new, path)


def _object(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Found]:
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    closed = new.get("additionalProperties", True) is False
    for name in old_props:
        if name not in new_props:
            yield (_join(path, name), "field removed", closed, True)
    for name in new_props:
        if name not in old_props:
            if name in new_req:
                yield (_join(path, name), "new required field", True, False)
            else:
                yield (_join(path, name), "new optional field", False, False)
    for name in old_props:
        if name not in new_props:
            continue
        where = _join(path, name)
        if name in new_req and name not in old_req:
            yield (where, "optional field made required", True, False)
        elif name in old_req and name not in new_req:
            yield (where, "required field made optional", False, True)
        yield from _schema(old_props[name], new_props[name], where)
    if old.get("additionalProperties", True) is not False and closed:
        yield (path or "payload", "other fields no longer allowed", True, False)
    elif old.get("additionalProperties", True) is False and not closed:
        yield (path or "payload", "other fields now allowed", False, True)


def _types(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Found]:
    a, b = _type_set(old), _type_set(new)
    if a == b:
        return
    narrower = _covers(a, b) and not _covers(b, a)  # new accepts less
    wider = _covers(b, a) and not _covers(a, b)
    what = f"type {_show(a)} -> {_show(b)}"
    if narrower:
        yield (path or "payload", what + " (narrowed)", True, False)
    elif wider:
        yield (path or "payload", what + " (widened)", False, True)
    else:
        yield (path or "payload", what, True, True)


def _constraints(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Found]:
    where = path or "payload"
    if old.get("enum") != new.get("enum"):
        before = set(map(repr, old["enum"])) if "enum" in old else None
        after = set(map(repr, new["enum"])) if "enum" in new else None
        if before is None:
            yield (where, "values limited to an enum (narrowed)", True, False)
        elif after is None:
            yield (where, "enum lifted (widened)", False, True)
        else:
            if before - after:
                yield (where, f"enum lost {', '.join(sorted(before - after))}", True, False)
            if after - before:
                yield (where, f"enum gained {', '.join(sorted(after - before))}", False, True)
    for key in ("format", "pattern"):
        if old.get(key) != new.get(key):
            if key not in old:
                yield (where, f"{key} {new[key]!r} added (narrowed)", True, False)
            elif key not in new:
                yield (where, f"{key} {old[key]!r} removed (widened)", False, True)
            else:
                yield (where, f"{key} {old[key]!r} -> {new[key]!r}", True, True)
    for key in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        lower = key in _LOWER_BOUNDS
        tighter = b is not None and (a is None or (b > a if lower else b < a))
        yield (where, f"{key} {a} -> {b} ({'narrowed' if tighter else 'widened'})",
               tighter, not tighter)


def _type_set(schema: dict[str, Any]) -> frozenset[str] | None:
    """The JSON types a schema allows (None: any)."""
    kind = schema.get("type")
    if kind is None:
        return None
    return frozenset([kind] if isinstance(kind, str) else kind)


def _covers(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    """Whether every value of types ``b`` is a value of types ``a``."""
    if a is None:
        return True
    if b is None:
        return False
    return all(t in a or bool(_WIDER.get(t, set()) & a) for t in b)


def _show(types: frozenset[str] | None) -> str:
    return "any" if types is None else "|".join(sorted(types))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
