"""The CloudEvents HTTP protocol binding (v1.0.2): structured and binary content modes.

*Structured*: ``Content-Type: application/cloudevents+json`` and the whole event (its
attributes and ``data``) as the JSON body. *Binary*: the attributes in ``ce-`` headers
(``ce-id``, ``ce-source``, ``ce-type``, ``ce-specversion``, ...; values percent-encoded
as the binding says), ``Content-Type`` as the event's ``datacontenttype``, and the body as
its ``data`` (JSON only: Concordia events carry JSON). The result is a structured-mode
dict for :func:`concordia.events.envelope.read_envelope`; batched mode is refused with a
message that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote

from concordia.definitions.jsonsafe import JsonLoadError, load_json
from concordia.events.envelope import is_json_media_type
from concordia.service.problems import Problem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
CE_PREFIX = "ce-"
Mode = Literal["structured", "binary"]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def ce_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``ce-*`` headers of a request, names lowercased."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(CE_PREFIX)}


def read_event(content_type: str | None, headers: Mapping[str, str],
               body: bytes) -> tuple[dict[str, Any], Mode]:
    """The event a request carries, as a structured-mode dict, and the mode it came in."""
    media = media_type(content_type)
    ce = ce_headers(headers)
    if media == BATCH:
        raise Problem(415, "unsupported-media-type", "batched CloudEvents are not accepted; "
                                                     "post one event a request")
    if media == STRUCTURED or (media.startswith("application/cloudevents") and
                               media.endswith("+json")):
        if ce:
            raise Problem(400, "invalid-event", "a structured-mode event carries its "
                                                "attributes in the body; drop the ce- headers")
        raw = parse_json(body, "the event")
        if not isinstance(raw, dict):
            raise Problem(400, "invalid-event", "a structured-mode event must be a JSON object")
        return raw, "structured"
    if "ce-specversion" in ce:
        if not is_json_media_type(media):
            raise Problem(415, "unsupported-media-type",
                          f"event data must be JSON (Content-Type application/json), not "
                          f"{media or 'none'!r}")
        event: dict[str, Any] = {}
        for name, value in ce.items():
            attribute = name[len(CE_PREFIX):]
            if attribute in ("data", "data_base64"):
                raise Problem(400, "invalid-event", f"header {name!r} is not a CloudEvents "
                                                    "attribute")
            try:
                event[attribute] = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise Problem(400, "invalid-event", f"header {name!r} is not percent-encoded "
                                                    "UTF-8") from None
        event["datacontenttype"] = content_type
        event["data"] = parse_json(body, "the event's data") if body else None
        return event, "binary"
    raise Problem(415, "unsupported-media-type",
                  "not a CloudEvent: send Content-Type: application/cloudevents+json with the "
                  "event as the body (structured mode), or the ce-specversion, ce-id, "
                  "ce-source, ce-type and ce-time headers with a JSON body (binary mode)")


def parse_json(body: bytes, what: str) -> Any:
    """Strict JSON (:func:`concordia.definitions.jsonsafe.load_json`: no duplicate keys, no
    NaN or Infinity), with a 400 that says where it broke."""
    try:
        return load_json(body)
    except JsonLoadError as exc:
        raise Problem(400, "malformed-json", f"{what} is not JSON: {exc}") from None
