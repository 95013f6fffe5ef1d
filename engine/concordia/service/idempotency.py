"""``Idempotency-Key`` for starting runs: a retried request starts one run, not two.

The key names the run: its id is derived from the key (a name-based UUID, version 8,
from SHA-256), so the run and "this key was used" are one record written in one
transaction by the store's ``create_run``, which refuses a second run with the same id.
A retry (after a timeout, a lost response, a restart of either side) finds the run the
first request started, and gets it back (``Idempotent-Replayed: true``) if it asked for
the same thing; a key reused for a different request is a 422 that says so. Nothing has
to expire or be cleaned up, and nothing can be half-written between a run and its key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from concordia.runtime.views import RunView
from concordia.service.problems import Problem

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_NAMESPACE = b"concordia:runs:idempotency-key\x00"


def check_key(key: str) -> str:
    """The key, if it is 1 to 255 visible ASCII characters; a 400 otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise Problem(400, "invalid-idempotency-key",
                      f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} visible ASCII "
                      "characters (a UUID is a good choice)")
    return key


def run_id_for(key: str) -> str:
    """The id of the run a key starts (RFC 9562 version 8, name-based on SHA-256)."""
    digest = bytearray(hashlib.sha256(_NAMESPACE + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def same_request(run: RunView, saga: str, version: int | None, input: Mapping[str, Any],
                 correlation_id: str | None) -> bool:
    """Whether the run a key started is what this request asks for."""
    return (run.saga == saga and (version is None or run.version == version)
            and _canonical(run.input) == _canonical(input)
            and (correlation_id is None or run.correlation_id == correlation_id))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
