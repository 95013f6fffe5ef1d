"""Signed webhooks: HMAC-SHA256 over a timestamp and the request, checked against a key ring.

A sender signs each request with a shared secret and says so in one header::

    Concordia-Signature: t=1732900000,v1=5f2b...e9

``t`` is the Unix time of signing (whole seconds) and each ``v1`` an HMAC-SHA256, in
lowercase hex, of the *signed payload*: ``t``, a full stop, then the body's bytes. In
CloudEvents binary mode the event's attributes travel in ``ce-*`` headers, outside the
body, so they are signed too: between the full stop and the body come one line
``name:value\\n`` per ``ce-*`` header (names lowercased, sorted) and an empty line.

The receiver accepts a request when ``t`` is within the tolerance window of its clock
(either side: clocks drift) and one ``v1`` matches one of its active keys, compared in
constant time (:func:`hmac.compare_digest`). Several keys may be active at once, and a
sender may send several ``v1`` (one per key), so a secret is rotated without a moment in
which requests are refused: add the new key to the receiver, move senders to it, remove
the old one. Secrets come from the environment (``CONCORDIA_WEBHOOK_SECRETS``, separated
by commas or whitespace) or a file (one a line, ``#`` comments), never from definitions;
a file is read again when it changes, so a rotation needs no restart (a file that cannot
be read, or holds a secret too short, is refused at start; later, the keys read last stay
in force and the log says why).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from concordia.errors import ConcordiaError

HEADER = "Concordia-Signature"
SCHEME = "v1"
ENV_SECRETS = "CONCORDIA_WEBHOOK_SECRETS"
DEFAULT_TOLERANCE = 300.0
MIN_SECRET_LENGTH = 16
# A header with more parts than this is refused before any HMAC is computed: the work a
# request can cause stays bounded whatever it sends.
MAX_SIGNATURES = 8
MAX_HEADER_LENGTH = 2048
_log = structlog.get_logger("concordia.service")


class SignatureError(ConcordiaError):
    """A request's signature is missing, malformed, expired or wrong; ``reason`` says which
    (``missing``, ``malformed``, ``expired``, ``mismatch``, ``unconfigured``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class SecretsError(ConcordiaError):
    """The configured secrets cannot be used (too short, unreadable file)."""


def signed_payload(timestamp: int, body: bytes,
                   ce_headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes a signature covers (see the module docstring)."""
    head = f"{timestamp}.".encode()
    if ce_headers:
        lines = "".join(f"{name.lower()}:{value}\n"
                        for name, value in sorted((k.lower(), v) for k, v in ce_headers.items()))
        head += lines.encode() + b"\n"
    return head + body


def sign(secret: str, timestamp: int, body: bytes,
         ce_headers: Mapping[str, str] | None = None) -> str:
    """The hex HMAC-SHA256 of the signed payload under ``secret``."""
    return hmac.new(secret.encode(), signed_payload(timestamp, body, ce_headers),
                    hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes,
                     ce_headers: Mapping[str, str] | None = None) -> str:
    """A ``Concordia-Signature`` value signed with every secret given (for senders)."""
    parts = [f"t={timestamp}"] + [f"{SCHEME}={sign(s, timestamp, body, ce_headers)}"
                                  for s in secrets]
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Parsed:
    timestamp: int
    signatures: tuple[str, ...]


def parse_header(value: str | None) -> Parsed:
    """``t`` and the ``v1`` values of a signature header; unknown schemes are ignored."""
    if value is None or not value.strip():
        raise SignatureError("missing", f"the request is not signed: send a {HEADER} header "
                                        f"(t=<unix time>,{SCHEME}=<hex HMAC-SHA256>)")
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureError("malformed", f"the {HEADER} header is longer than "
                                          f"{MAX_HEADER_LENGTH} characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, sep, text = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed", f"the {HEADER} header has a part without "
                                              f"'=': {part.strip()[:40]!r}")
        if name == "t":
            if not text.isdigit() or not text.isascii() or len(text) > 12:
                raise SignatureError("malformed", f"the {HEADER} header's t is not a Unix "
                                                  f"time in whole seconds: {text[:20]!r}")
            timestamp = int(text)
        elif name == SCHEME:
            signatures.append(text.strip().lower())
    if timestamp is None:
        raise SignatureError("malformed", f"the {HEADER} header has no t=<unix time>")
    if not signatures:
        raise SignatureError("malformed", f"the {HEADER} header has no {SCHEME}=<signature>")
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError("malformed", f"the {HEADER} header has more than "
                                          f"{MAX_SIGNATURES} signatures")
    return Parsed(timestamp, tuple(signatures))


class KeyRing:
    """The active webhook secrets: from the environment, a file, or given (tests)."""

    def __init__(self, secrets: Iterable[str] = (), *, path: str | None = None) -> None:
        self._given = _checked(secrets, "given")
        self.path = path
        self._lock = threading.Lock()
        self._file_keys: tuple[bytes, ...] = ()
        self._stamp: tuple[float, int] | None = None
        if path is not None:
            self._reload()

    @classmethod
    def from_environment(cls, path: str | None = None,
                         environ: Mapping[str, str] | None = None) -> KeyRing:
        """Secrets from ``CONCORDIA_WEBHOOK_SECRETS`` and, if given, the file ``path``."""
        env = os.environ if environ is None else environ
        raw = env.get(ENV_SECRETS, "")
        secrets = [s for s in raw.replace(",", " ").split() if s]
        return cls(secrets, path=path)

    def keys(self) -> tuple[bytes, ...]:
        if self.path is not None:
            try:
                self._reload()
            except SecretsError as exc:
                # A file being rewritten or mistyped while the server runs: the keys read
                # last stay in force (refusing every sender would be an outage), and the
                # log says why the new ones were not taken.
                _log.error("webhook_secrets.unreadable", error=str(exc))
        return self._given + self._file_keys

    def __bool__(self) -> bool:
        return bool(self.keys())

    def _reload(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SecretsError(f"webhook secrets file {self.path}: {exc.strerror}") from None
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            if stamp == self._stamp:
                return
            self._stamp = stamp  # tried once per version of the file
            try:
                with open(self.path, encoding="utf-8") as f:
                    lines = [line.split("#", 1)[0].strip() for line in f]
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretsError(f"webhook secrets file {self.path}: {exc}") from None
            self._file_keys = _checked([s for s in lines if s], self.path)

    def verify(self, header: str | None, body: bytes, ce_headers: Mapping[str, str] | None,
               now: float, tolerance: float = DEFAULT_TOLERANCE) -> int:
        """Check a request's signature; return its timestamp or raise SignatureError."""
        keys = self.keys()
        if not keys:
            raise SignatureError("unconfigured", "this server has no webhook secrets: set "
                                                 f"{ENV_SECRETS} or --webhook-secrets-file")
        parsed = parse_header(header)
        if abs(now - parsed.timestamp) > tolerance:
            raise SignatureError("expired", f"the signature's timestamp {parsed.timestamp} "
                                            f"is more than {tolerance:g} s from this server's "
                                            f"time ({int(now)}); sign each request when it "
                                            "is sent, with a synchronised clock")
        payload = signed_payload(parsed.timestamp, body, ce_headers)
        matched = False
        for key in keys:
            expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
            for candidate in parsed.signatures:
                # Every pair is compared (no early exit): the time taken says nothing of
                # which key matched or how much of a signature was right.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("mismatch", "the signature does not match the request under "
                                             "any active key (sign t, '.', then the exact "
                                             "body bytes)")
        return parsed.timestamp


def _checked(secrets: Iterable[str], where: str) -> tuple[bytes, ...]:
    out = []
    for secret in secrets:
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretsError(f"webhook secret from {where} is {len(secret)} characters long; "
                            f"use at least {MIN_SECRET_LENGTH} random ones "
                            "(e.g. `openssl rand -hex 32`)")
        out.append(secret.encode())
    return tuple(out)
