"""The journal's rule for text, applied to every string a request carries, where it enters.

A journaled string holds no NUL (U+0000) and no lone surrogate and has a bounded length
(:func:`concordia.values.check_text`; :func:`concordia.values.check_value` for JSON
values). PostgreSQL cannot store NUL at all and no store can encode a lone surrogate, so
a request carrying one must be refused before any store sees it, or each store would
answer it differently (one a 503, another a 201). Here the rule is checked on body fields,
path parameters and query filters alike, and a refusal is a 422 whose ``field`` names the
place: ``body/correlation_id``, ``path/run_id``, ``query/before``,
``body/input/order_id``, an event's ``source``.

:data:`Text` wraps a pydantic string type with the rule (the error type ``value_limit``
makes the answer a 422 wherever the string was, see :mod:`.problems`);
:func:`check_json` and :func:`check_attribute` do the same for a JSON value and for an
event's attributes.

Limits of an event's attributes (characters): ``id`` is a UUID (36); ``source`` at most
:data:`MAX_SOURCE` (256: with ``id`` it keys the inbox, and a key must stay well inside
what a database index entry holds, about 2,700 bytes in PostgreSQL); ``type`` at most
200, as saga and step names; ``correlationid`` and ``causationid`` at most 200, as a run's
``correlation_id``; ``subject``, ``dataschema`` and string extensions at most 1,024.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from concordia.errors import ValueLimitError
from concordia.events.envelope import Envelope
from concordia.service.problems import Problem
from concordia.values import check_text, check_value

MAX_SOURCE = 256
MAX_ID = 36
MAX_NAME = 200
MAX_TEXT = 1024
_EVENT_LIMITS = {"id": MAX_ID, "source": MAX_SOURCE, "type": MAX_NAME,
                 "correlationid": MAX_NAME, "causationid": MAX_NAME, "subject": MAX_TEXT,
                 "dataschema": MAX_TEXT}


def _journal_text(value: str) -> str:
    # Lengths are the fields' own (max_length, reported as pydantic does); this is the
    # rest of the rule.
    try:
        return check_text(value, "text", max_length=len(value))
    except ValueLimitError as exc:
        raise PydanticCustomError("value_limit", "{reason}", {"reason": exc.reason}) from None


# A string the journal keeps as it is; add the field's length with Field/Path/Query.
Text = Annotated[str, AfterValidator(_journal_text)]


def check_json(value: Any, field: str) -> None:
    """A 422 naming the place (``field`` and the pointer within) unless ``value`` is JSON
    data the journal keeps."""
    try:
        check_value(value, field)
    except ValueLimitError as exc:
        raise Problem(422, "value-limit", f"{field}{exc.path}: {exc.reason}",
                      field=f"{field}{exc.path}") from None


def check_attribute(name: str, value: str, event_type: str | None = None) -> None:
    """A 422 ``invalid-event`` naming the attribute unless ``value`` is journal text
    within the attribute's limit."""
    try:
        check_text(value, name, _EVENT_LIMITS.get(name, MAX_TEXT))
    except ValueLimitError as exc:
        raise Problem(422, "invalid-event", f"the event's {name}: {exc.reason}", field=name,
                      event_type=event_type) from None


def check_event(envelope: Envelope) -> None:
    """Every string attribute of an event, and its data (see the module docstring)."""
    attributes: dict[str, Any] = {"id": envelope.id, "source": envelope.source,
                                  "type": envelope.type, "time": envelope.time,
                                  "subject": envelope.subject,
                                  "dataschema": envelope.dataschema,
                                  "correlationid": envelope.correlationid,
                                  "causationid": envelope.causationid,
                                  **envelope.extensions}
    for name, value in attributes.items():
        if isinstance(value, str):
            check_attribute(name, value, envelope.type)
    check_json(envelope.data, "data")
