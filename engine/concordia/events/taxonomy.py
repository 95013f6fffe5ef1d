"""Checks an event against the taxonomy: its type must exist and its payload must fit.

The version comes from the envelope (``dataschema`` or ``dataversion``) or, when it says
none, is the latest the catalog holds. Payloads are checked with JSON Schema Draft
2020-12 with formats enforced (``uuid``, ``date-time``, ``email``, ...), and every
violation is reported in one :class:`~concordia.errors.EventError` whose ``field`` is the
first offending field, so a caller fixing a payload sees everything at once.
"""

from __future__ import annotations

import difflib
from typing import Any

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import EventDef
from concordia.errors import EventError
from concordia.events.envelope import Envelope
from concordia.jsonvalidation import FieldError, SchemaError, check, summarise


def resolve_event(catalog: Catalog, event_type: str, version: int | None = None) -> EventDef:
    """The taxonomy entry for ``event_type`` (latest version unless one is given)."""
    if not catalog.has_event(event_type):
        known = sorted(catalog.event_names())
        close = difflib.get_close_matches(event_type, known, n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]!r}?" if close
                else "add it to the taxonomy under definitions/events/")
        raise EventError(f"unknown event type {event_type!r}: it is not in the taxonomy "
                         f"({hint})", event_type=event_type, field="type")
    if version is not None and not catalog.has_event(event_type, version):
        versions = sorted(v for n, v in catalog.events if n == event_type)
        raise EventError(f"event type {event_type!r} has no version {version} "
                         f"(known: {', '.join(map(str, versions))})",
                         event_type=event_type, field="dataschema")
    return catalog.event(event_type, version)


def payload_errors(event: EventDef, data: Any) -> list[FieldError]:
    """Every way ``data`` breaks ``event``'s payload schema, each once, in a stable order."""
    try:
        errors = check(event.payload_schema, data)
    except SchemaError as exc:
        # The catalog validates schemas when it loads, so this means a hand-built catalog.
        raise EventError(f"event type {event.name!r} v{event.version} has an invalid payload "
                         f"schema: {exc.message}", event_type=event.name) from None
    # jsonschema reports a missing required field once per `required` error, and each
    # error names the whole list; a field is reported once however often it is named.
    return list(dict.fromkeys(errors))


def validate_payload(catalog: Catalog, event_type: str, version: int | None,
                     data: Any) -> EventDef:
    """Check ``data`` against the payload schema; return the entry it was checked against."""
    event = resolve_event(catalog, event_type, version)
    errors = payload_errors(event, data)
    if errors:
        count = f"{len(errors)} problems" if len(errors) > 1 else "1 problem"
        raise EventError(
            f"event {event_type!r} v{event.version}: payload has {count}: "
            + summarise(errors),
            event_type=event_type,
            field=errors[0].field or None,
        )
    return event


def validate_event(catalog: Catalog, envelope: Envelope) -> EventDef:
    """Check an envelope's type and payload against the taxonomy; return the entry used."""
    return validate_payload(catalog, envelope.type, envelope.version, envelope.data)
