"""``POST /events``: signed CloudEvents over HTTP, delivered to the engine.

The order of checks is the order of cost, and none writes anything until the last: the
body's size (:mod:`.limits`, before this route runs), the signature over the raw bytes
(``Concordia-Signature``, :mod:`.signatures`, or Standard Webhooks,
:mod:`.standard_webhooks`), the CloudEvents binding (:mod:`.cloudevents_http`), the
envelope and the text of its attributes (:mod:`.fields`);
then ``engine.deliver``, which checks the event against the taxonomy, then resumes the
runs awaiting it and starts the runs it triggers, in one transaction with the event's
inbox entry. That entry
is the replay protection: an event (by source and id) already accepted is refused with
409, writing nothing, even after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field
from typing_extensions import TypedDict

from concordia.errors import EventError, ValueLimitError
from concordia.events.envelope import MAX_SOURCE, read_envelope
from concordia.service import standard_webhooks
from concordia.service.cloudevents_http import STRUCTURED, Mode, ce_headers, read_event
from concordia.service.fields import check_event
from concordia.service.guard import Access, access
from concordia.service.problems import Problem, problem_responses
from concordia.service.signatures import HEADER, SignatureError
from concordia.service.state import Service, Svc

router = APIRouter(tags=["events"])

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string", "minLength": 1, "maxLength": MAX_SOURCE},
        "type": {"type": "string", "minLength": 1},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string"},
        "subject": {"type": "string"},
        "correlationid": {"type": "string"},
        "causationid": {"type": "string"},
        "data": {},
    },
}
_OPENAPI: dict[str, Any] = {
    **access(Access.WEBHOOK),
    "parameters": [
        {"name": HEADER, "in": "header", "required": False, "schema": {"type": "string"},
         "description": "t=<unix time>,v1=<hex HMAC-SHA256 of t '.' body> (several v1 "
                        "while keys rotate); binary mode also signs the ce- headers"},
        *({"name": name, "in": "header", "required": False, "schema": {"type": "string"},
           "description": "Standard Webhooks (structured mode only): " + text}
          for name, text in ((standard_webhooks.ID_HEADER, "the message id"),
                             (standard_webhooks.TIMESTAMP_HEADER, "Unix time of signing"),
                             (standard_webhooks.SIGNATURE_HEADER,
                              "v1,<base64 HMAC-SHA256 of id '.' timestamp '.' body> "
                              "(space-separated, several while keys rotate)"))),
    ],
    "requestBody": {
        "required": True,
        "description": "One CloudEvent: structured mode (the whole event as the body), or "
                       "binary mode (attributes in ce- headers, the data as the body)",
        "content": {STRUCTURED: {"schema": _ENVELOPE_SCHEMA},
                    "application/json": {"schema": {}}},
    },
}


class EventAccepted(TypedDict):
    """What delivering the event did: the runs it resumed and those it started."""

    event_id: str
    source: str
    type: str
    mode: Annotated[Mode, Field(description="How the event came: the whole event as the "
                                            "body, or its attributes in ce- headers")]
    resumed: Annotated[list[str], Field(description="The ids of the runs it resumed")]
    started: Annotated[list[str], Field(description="The ids of the runs it started")]
    buffered: Annotated[bool, Field(description="Kept for a while: no run awaited it yet "
                                                "(a callback that came early)")]


@router.post("/events", status_code=202, summary="Deliver a signed CloudEvent",
             openapi_extra=_OPENAPI,
             responses={202: {"description": "Accepted: the runs it resumed and started"},
                        **problem_responses(400, 401, 409, 413, 415, 421, 422, 503)})
async def post_event(request: Request, svc: Svc) -> EventAccepted:
    body = await request.body()
    headers = request.headers
    ce = ce_headers(headers)
    _verify(svc, headers, body, ce)
    try:
        raw, mode = read_event(headers.get("content-type"), headers, body)
        envelope, problems = read_envelope(raw)
        if envelope is None:
            raise Problem(400, "invalid-event", "; ".join(p.text() for p in problems),
                          field=problems[0].attribute or None)
        check_event(envelope)
        try:
            # Delivery checks the event against the taxonomy before it writes anything
            # (and maps a trigger's input): what it refuses is a 422 here.
            delivery = await svc.engine.deliver(envelope)
        except (EventError, ValueLimitError) as exc:
            field = exc.field if isinstance(exc, EventError) else exc.path or None
            raise Problem(422, "invalid-event", str(exc), field=field,
                          event_type=envelope.type) from None
    except Problem as problem:
        svc.metrics.webhooks.labels("invalid").inc()
        raise problem from None
    if delivery.duplicate:
        svc.metrics.webhooks.labels("replayed").inc()
        raise Problem(409, "event-replayed",
                      f"event {envelope.id} from {envelope.source} was accepted before; it "
                      "is not delivered again (a sender retrying after a lost answer may "
                      "take this as delivered)", event_id=envelope.id)
    svc.metrics.webhooks.labels("accepted").inc()
    return {"event_id": envelope.id, "source": envelope.source, "type": envelope.type,
            "mode": mode, "resumed": delivery.resumed, "started": delivery.started,
            "buffered": delivery.buffered}


def _verify(svc: Service, headers: Mapping[str, str], body: bytes,
            ce: Mapping[str, str]) -> None:
    """Check the request's signature, in whichever scheme it is signed; a 401 (503
    without keys for that scheme) when it does not hold."""
    keys = svc.options.keys
    standard = standard_webhooks.present(headers)
    try:
        if standard and HEADER in headers:
            raise SignatureError("malformed", f"the request carries both {HEADER} and "
                                              "Standard Webhooks headers; sign it one way")
        if standard:
            standard_webhooks.verify(keys.all().standard, headers, body, ce, time.time(),
                                     svc.options.tolerance)
        else:
            keys.verify(headers.get(HEADER), body, ce, time.time(), svc.options.tolerance)
    except SignatureError as exc:
        reason = exc.reason
        if reason == "unconfigured" and keys:
            # Secrets for the other scheme only: the sender's scheme is not taken here.
            reason = "unsupported"
        svc.metrics.webhooks.labels(f"signature_{reason}").inc()
        if reason == "unconfigured":
            raise Problem(503, "webhooks-unconfigured", str(exc)) from None
        challenge = (f'Standard-Webhooks header="{standard_webhooks.SIGNATURE_HEADER}"'
                     if standard else f'Concordia-HMAC-SHA256 header="{HEADER}"')
        raise Problem(401, f"signature-{reason}", str(exc),
                      headers={"WWW-Authenticate": challenge}) from None
