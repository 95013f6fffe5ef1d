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
a file is read again when its content changes (:mod:`.watched`), so a rotation needs no
restart (a file that cannot be read, or holds a secret too short, is refused at start;
later, the keys read last stay in force and the log says why).

The same key ring holds the secrets of Standard Webhooks senders (:mod:`.standard_webhooks`),
written as such senders are given them: ``whsec_`` and the key in base64. A secret of
that form verifies ``webhook-signature`` headers only, and a plain secret
``Concordia-Signature`` headers only: each sender signs with the key it was given, in the
one way its scheme says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from concordia.errors import ConcordiaError
from concordia.service.watched import ConfigFileError, WatchedFile

HEADER = "Concordia-Signature"
SCHEME = "v1"
ENV_SECRETS = "CONCORDIA_WEBHOOK_SECRETS"
DEFAULT_TOLERANCE = 300.0
MIN_SECRET_LENGTH = 16
# Standard Webhooks secrets: "whsec_" and base64; the standard asks for 24 to 64 bytes.
STANDARD_PREFIX = "whsec_"
MIN_STANDARD_KEY_BYTES = 24
# A header with more parts than this is refused before any HMAC is computed: the work a
# request can cause stays bounded whatever it sends.
MAX_SIGNATURES = 8
MAX_HEADER_LENGTH = 2048
_HEX = re.compile(r"[0-9a-f]{1,128}")


class SignatureError(ConcordiaError):
    """A request's signature is missing, malformed, expired or wrong; ``reason`` says which
    (``missing``, ``malformed``, ``expired``, ``mismatch``, ``unconfigured``: no key of
    its scheme)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class SecretsError(ConfigFileError):
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
                                        f"(t=<unix time>,{SCHEME}=<hex HMAC-SHA256>), or "
                                        "Standard Webhooks' webhook-id, webhook-timestamp "
                                        "and webhook-signature")
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureError("malformed", f"the {HEADER} header is longer than "
                                          f"{MAX_HEADER_LENGTH} characters")
    if not value.isascii():
        raise SignatureError("malformed", f"the {HEADER} header holds characters other "
                                          "than ASCII")
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
            signature = text.strip().lower()
            if not _HEX.fullmatch(signature):
                raise SignatureError("malformed", f"the {HEADER} header's {SCHEME} is not "
                                                  f"a hex HMAC-SHA256: {signature[:20]!r}")
            signatures.append(signature)
    if timestamp is None:
        raise SignatureError("malformed", f"the {HEADER} header has no t=<unix time>")
    if not signatures:
        raise SignatureError("malformed", f"the {HEADER} header has no {SCHEME}=<signature>")
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError("malformed", f"the {HEADER} header has more than "
                                          f"{MAX_SIGNATURES} signatures")
    return Parsed(timestamp, tuple(signatures))


@dataclass(frozen=True, slots=True)
class Keys:
    """Active keys by scheme: HMAC keys for ``Concordia-Signature`` (a plain secret's
    bytes) and for Standard Webhooks (a ``whsec_`` secret's decoded key)."""

    concordia: tuple[bytes, ...] = ()
    standard: tuple[bytes, ...] = ()

    def __add__(self, other: Keys) -> Keys:
        return Keys(self.concordia + other.concordia, self.standard + other.standard)

    def __bool__(self) -> bool:
        return bool(self.concordia or self.standard)


class KeyRing:
    """The active webhook secrets: from the environment, a file, or given (tests)."""

    def __init__(self, secrets: Iterable[str] = (), *, path: str | None = None) -> None:
        self._given = parse_secrets(secrets, "given")
        self.path = path
        self._file: WatchedFile[Keys] | None = None
        if path is not None:
            self._file = WatchedFile(path, "webhook secrets file", _file_keys(path),
                                     error=SecretsError)

    @classmethod
    def from_environment(cls, path: str | None = None,
                         environ: Mapping[str, str] | None = None) -> KeyRing:
        """Secrets from ``CONCORDIA_WEBHOOK_SECRETS`` and, if given, the file ``path``."""
        env = os.environ if environ is None else environ
        raw = env.get(ENV_SECRETS, "")
        secrets = [s for s in raw.replace(",", " ").split() if s]
        return cls(secrets, path=path)

    def all(self) -> Keys:
        """Every active key of both schemes (a file's as it reads now)."""
        if self._file is None:
            return self._given
        return self._given + self._file.value()

    def keys(self) -> tuple[bytes, ...]:
        """The active keys of ``Concordia-Signature``."""
        return self.all().concordia

    def __bool__(self) -> bool:
        return bool(self.all())

    def verify(self, header: str | None, body: bytes, ce_headers: Mapping[str, str] | None,
               now: float, tolerance: float = DEFAULT_TOLERANCE) -> int:
        """Check a request's signature; return its timestamp or raise SignatureError."""
        keys = self.keys()
        if not keys:
            raise SignatureError("unconfigured", unconfigured(HEADER))
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
                matched |= hmac.compare_digest(expected.encode(), candidate.encode())
        if not matched:
            raise SignatureError("mismatch", "the signature does not match the request under "
                                             "any active key (sign t, '.', then the exact "
                                             "body bytes)")
        return parsed.timestamp


def unconfigured(header: str) -> str:
    """Why a request signed in ``header``'s scheme cannot be checked here."""
    kind = "whsec_ " if header != HEADER else ""
    return (f"this server has no {kind}webhook secrets to check {header} with: set "
            f"{ENV_SECRETS} or --webhook-secrets-file")


def parse_secrets(secrets: Iterable[str], where: str) -> Keys:
    """The keys of configured secrets; a :class:`SecretsError` for one that is unusable."""
    concordia: list[bytes] = []
    standard: list[bytes] = []
    for secret in secrets:
        if secret.startswith(STANDARD_PREFIX):
            standard.append(_standard_key(secret, where))
            continue
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretsError(f"webhook secret from {where} is {len(secret)} characters "
                               f"long; use at least {MIN_SECRET_LENGTH} random ones "
                               "(e.g. `openssl rand -hex 32`)")
        concordia.append(secret.encode())
    return Keys(tuple(concordia), tuple(standard))


def _standard_key(secret: str, where: str) -> bytes:
    encoded = secret[len(STANDARD_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(f"webhook secret from {where} starts with {STANDARD_PREFIX} but "
                           "the rest is not base64") from None
    if len(key) < MIN_STANDARD_KEY_BYTES:
        raise SecretsError(f"webhook secret from {where} ({STANDARD_PREFIX}...) is a key of "
                           f"{len(key)} bytes; Standard Webhooks keys have at least "
                           f"{MIN_STANDARD_KEY_BYTES} (e.g. `whsec_$(openssl rand -base64 "
                           "32)`)")
    return key


def _file_keys(path: str) -> Callable[[bytes], Keys]:
    def parse(raw: bytes) -> Keys:
        lines = [line.split("#", 1)[0].strip() for line in raw.decode("utf-8").splitlines()]
        return parse_secrets([s for s in lines if s], path)

    return parse
