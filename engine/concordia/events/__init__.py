"""Events: the CloudEvents envelope and its validation against the taxonomy."""

from concordia.events.envelope import Envelope, dataschema_for, new_event
from concordia.events.taxonomy import resolve_event, validate_event, validate_payload

__all__ = [
    "Envelope",
    "dataschema_for",
    "new_event",
    "resolve_event",
    "validate_event",
    "validate_payload",
]
