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
makes the answer a 422 wherever the string was, see :mod:`.problems`); :func:`check_json`
does the same for a JSON value. An event's attributes are held to the rule (and to their
limits) by the envelope itself (:func:`concordia.events.envelope.read_envelope`): one
that breaks it is a malformed event, a 400, whoever sends it (the API, ``concordia
events send``, a bus consumer).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from concordia.errors import ValueLimitError
from concordia.events.envelope import Envelope
from concordia.service.problems import Problem
from concordia.values import check_text, check_value

# The longest name or id a request may carry (a saga's name, a run's id, a correlation id).
MAX_NAME = 200


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


def check_event(envelope: Envelope) -> None:
    """An event's data (its attributes the envelope has checked)."""
    check_json(envelope.data, "data")
