"""Standard Webhooks signatures (https://www.standardwebhooks.com), beside
``Concordia-Signature``: for senders whose webhook library speaks the standard.

A request carries three headers::

    webhook-id: msg_2b7f...                 the message's id
    webhook-timestamp: 1732900000           Unix time of signing, whole seconds
    webhook-signature: v1,K5oZfz... v1,...  space-separated; v1 = base64 HMAC-SHA256

and each ``v1`` signs ``id.timestamp.body`` with a key the sender was given as
``whsec_<base64>``, kept in the same key ring as the plain secrets (see
:mod:`.signatures`). The signature is computed by the ``standardwebhooks`` package's own
signer, so it is the standard's construction byte for byte; the checks around it are
this server's, as for ``Concordia-Signature``: the timestamp within the tolerance window
(``--signature-tolerance``, either side), every key compared with every signature in
constant time without an early exit, bounded header sizes, and anything malformed (not
ASCII, no ``v1``, a signature that is not base64) a 401 before any HMAC is computed.

The signature covers the body and nothing else, so only a structured-mode CloudEvent (the
whole event in the body) is taken this way: ``ce-`` headers would travel unsigned.
Replays are refused as every event's are, by the inbox (an event, by source and id,
accepted before is a 409).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

from concordia.service.signatures import (
    MAX_HEADER_LENGTH,
    MAX_SIGNATURES,
    SignatureError,
    unconfigured,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_ID_LENGTH = 256
# One signature: the version, a comma, and base64 (44 characters for HMAC-SHA256).
_SIGNATURE = re.compile(r"(?P<version>[a-z0-9]{1,8}),(?P<value>[A-Za-z0-9+/]{1,128}={0,2})")
_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class Parsed:
    id: str
    timestamp: int
    signatures: tuple[str, ...]  # the v1 ones, each "v1,<base64>"


def present(headers: Mapping[str, str]) -> bool:
    """Whether a request is signed (or meant to be) the Standard Webhooks way."""
    return any(name in headers for name in (SIGNATURE_HEADER, ID_HEADER, TIMESTAMP_HEADER))


def parse_headers(headers: Mapping[str, str]) -> Parsed:
    """The id, timestamp and ``v1`` signatures of a request; a :class:`SignatureError`
    (``missing`` or ``malformed``) naming the header that is wrong."""
    values = {name: headers.get(name) for name in (ID_HEADER, TIMESTAMP_HEADER,
                                                   SIGNATURE_HEADER)}
    absent = [name for name, value in values.items() if not value or not value.strip()]
    if absent:
        raise SignatureError("missing", f"a Standard Webhooks request carries {ID_HEADER}, "
                                        f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER}; "
                                        f"{', '.join(absent)} missing")
    msg_id, stamp, signature = (str(values[n]).strip() for n in values)
    if not _ID.fullmatch(msg_id):
        raise SignatureError("malformed", f"{ID_HEADER} must be 1 to {MAX_ID_LENGTH} visible "
                                          "ASCII characters")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("malformed", f"{TIMESTAMP_HEADER} is not a Unix time in whole "
                                          f"seconds: {stamp[:20]!r}")
    if len(signature) > MAX_HEADER_LENGTH or not signature.isascii():
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} is longer than "
                                          f"{MAX_HEADER_LENGTH} characters or not ASCII")
    v1: list[str] = []
    for part in signature.split():
        match = _SIGNATURE.fullmatch(part)
        if match is None:
            raise SignatureError("malformed", f"{SIGNATURE_HEADER} holds {part[:24]!r}, not "
                                              "<version>,<base64 signature>")
        if match["version"] == "v1":  # other versions (v1a: asymmetric) are not ours
            v1.append(part)
    if not v1:
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} has no v1,<signature>")
    if len(v1) > MAX_SIGNATURES:
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} has more than "
                                          f"{MAX_SIGNATURES} signatures")
    return Parsed(msg_id, int(stamp), tuple(v1))


def verify(keys: tuple[bytes, ...], headers: Mapping[str, str], body: bytes,
           ce_headers: Mapping[str, str], now: float, tolerance: float) -> Parsed:
    """Check a request's Standard Webhooks signature under ``keys``; return what it said
    or raise :class:`SignatureError` (reasons as for ``Concordia-Signature``)."""
    if not keys:
        raise SignatureError("unconfigured", unconfigured(SIGNATURE_HEADER))
    parsed = parse_headers(headers)
    if ce_headers:
        raise SignatureError("malformed", f"a {SIGNATURE_HEADER} covers the body only, so "
                                          "the ce- headers of a binary-mode event would go "
                                          "unsigned: send the event in structured mode")
    if abs(now - parsed.timestamp) > tolerance:
        raise SignatureError("expired", f"{TIMESTAMP_HEADER} {parsed.timestamp} is more than "
                                        f"{tolerance:g} s from this server's time "
                                        f"({int(now)}); sign each request when it is sent")
    signed_at = datetime.fromtimestamp(parsed.timestamp, UTC)
    matched = False
    for key in keys:
        expected = Webhook(key).sign(parsed.id, signed_at, body).encode()
        for candidate in parsed.signatures:
            # Every pair is compared, as for Concordia-Signature: no early exit.
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise SignatureError("mismatch", f"no {SIGNATURE_HEADER} matches the request under "
                                         "any active whsec_ key (sign id, '.', timestamp, "
                                         "'.', then the exact body bytes)")
    return parsed
