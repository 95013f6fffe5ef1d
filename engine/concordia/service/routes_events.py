"""``POST /events``: signed CloudEvents over HTTP, delivered to the engine.

The order of checks is the order of cost, and none writes anything until the last: the
body's size (:mod:`.limits`, before this route runs), the signature over the raw bytes
(:mod:`.signatures`), the CloudEvents binding (:mod:`.cloudevents_http`), the envelope;
then ``engine.deliver``, which checks the event against the taxonomy, then resumes the
runs awaiting it and starts the runs it triggers, in one transaction with the event's
inbox entry. That entry
is the replay protection: an event (by source and id) already accepted is refused with
409, writing nothing, even after a restart.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from concordia.errors import EventError, ValueLimitError
from concordia.events.envelope import read_envelope
from concordia.service.cloudevents_http import STRUCTURED, ce_headers, read_event
from concordia.service.problems import Problem, problem_responses
from concordia.service.signatures import HEADER, SignatureError
from concordia.service.state import Svc

router = APIRouter(tags=["events"])

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string", "minLength": 1},
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
    "parameters": [
        {"name": HEADER, "in": "header", "required": True, "schema": {"type": "string"},
         "description": "t=<unix time>,v1=<hex HMAC-SHA256 of t '.' body> (several v1 "
                        "while keys rotate); binary mode also signs the ce- headers"},
    ],
    "requestBody": {
        "required": True,
        "description": "One CloudEvent: structured mode (the whole event as the body), or "
                       "binary mode (attributes in ce- headers, the data as the body)",
        "content": {STRUCTURED: {"schema": _ENVELOPE_SCHEMA},
                    "application/json": {"schema": {}}},
    },
}


@router.post("/events", status_code=202, summary="Deliver a signed CloudEvent",
             openapi_extra=_OPENAPI,
             responses={202: {"description": "Accepted: the runs it resumed and started"},
                        **problem_responses(400, 401, 409, 413, 415, 422, 503)})
async def post_event(request: Request, svc: Svc) -> JSONResponse:
    body = await request.body()
    headers = request.headers
    ce = ce_headers(headers)
    try:
        svc.options.keys.verify(headers.get(HEADER), body, ce, time.time(),
                                svc.options.tolerance)
    except SignatureError as exc:
        svc.metrics.webhooks.labels(f"signature_{exc.reason}").inc()
        if exc.reason == "unconfigured":
            raise Problem(503, "webhooks-unconfigured", str(exc)) from None
        raise Problem(401, f"signature-{exc.reason}", str(exc),
                      headers={"WWW-Authenticate": 'Concordia-HMAC-SHA256 header="'
                                                   f'{HEADER}"'}) from None
    try:
        raw, mode = read_event(headers.get("content-type"), headers, body)
        envelope, problems = read_envelope(raw)
        if envelope is None:
            raise Problem(400, "invalid-event", "; ".join(p.text() for p in problems),
                          field=problems[0].attribute or None)
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
    return JSONResponse({"event_id": envelope.id, "source": envelope.source,
                         "type": envelope.type, "mode": mode,
                         "resumed": delivery.resumed, "started": delivery.started,
                         "buffered": delivery.buffered}, status_code=202)
