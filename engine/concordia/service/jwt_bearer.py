"""Bearer JWTs (OIDC access tokens), verified with PyJWT against the keys of a JWKS file.

For deployments whose identity provider issues the tokens: ``--jwks-file`` names a file
holding the provider's JSON Web Key Set (fetched by whatever deploys the server, read
again here when its content changes, so a key rotation needs no restart), and
``--jwt-issuer`` and ``--jwt-audience`` say whose tokens, for whom, are taken.

A token is taken when all of these hold:

- its header names a key of the set (``kid``; a set of one key may be used without it)
  and the algorithm that key is for (the key's ``alg``, else the one its type implies:
  RS256 for RSA, ES256/384/512 by curve, EdDSA for Ed25519). The algorithm is never
  taken from the token: ``none`` and the HMAC algorithms are refused, and the set may
  hold public keys only;
- the signature verifies;
- ``iss`` is the issuer, ``aud`` is (or, as a list, holds) the audience, and ``exp`` is
  present and not past, with :data:`LEEWAY` seconds for clocks that drift (and ``nbf``
  and ``iat``, when present, likewise).

Scopes come from ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (a list or a
string, as some providers write it); the names are those of :mod:`.scopes`. The log names
a token by its ``sub`` (or ``client_id``/``azp`` when it has none), never the token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt

from concordia.definitions.jsonsafe import JsonLoadError, load_json
from concordia.service.scopes import AuthError, Principal, scopes_named
from concordia.service.watched import ConfigFileError, WatchedFile

LEEWAY = 30.0
MAX_TOKEN_LENGTH = 8192
_SIGNING = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
            "ES512", "EdDSA"}


class JwksError(ConfigFileError):
    """The JWKS file, or the issuer and audience that go with it, cannot be used."""


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[jwt.PyJWK, ...]

    def for_token(self, kid: object) -> jwt.PyJWK:
        if kid is None:
            if len(self.keys) == 1:
                return self.keys[0]
            raise AuthError("invalid_token", "the JWT names no key (kid) and the key set "
                                             "has several")
        for key in self.keys:
            if key.key_id == kid:
                return key
        raise AuthError("invalid_token", f"the JWT's key {str(kid)[:80]!r} is not in the key "
                                         "set (a key the provider has retired, or another "
                                         "provider's)")


def parse_jwks(raw: bytes) -> KeySet:
    """The signing keys of a JWKS document; a ValueError says what is wrong with it."""
    try:
        document = load_json(raw)
    except JsonLoadError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError('not a JSON Web Key Set (an object with a "keys" list)')
    keys = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"key {n} is not an object")
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key of the same provider: not for signatures
        keys.append(_signing_key(n, entry))
    if not keys:
        raise ValueError("no signing keys (every key is for encryption)")
    return KeySet(tuple(keys))


def _signing_key(n: int, entry: dict[str, Any]) -> jwt.PyJWK:
    if entry.get("kty") == "oct" or "d" in entry:
        raise ValueError(f"key {n} is a secret or private key; the set must hold the "
                         "provider's public keys only")
    try:
        key = jwt.PyJWK(entry)
    except jwt.PyJWTError as exc:
        raise ValueError(f"key {n}: {exc}") from None
    if key.algorithm_name not in _SIGNING:
        raise ValueError(f"key {n} is for {key.algorithm_name}; use one of "
                         f"{', '.join(sorted(_SIGNING))}")
    return key


class JwtVerifier:
    """Verifies bearer JWTs against a JWKS file for one issuer and audience."""

    def __init__(self, jwks_path: str, issuer: str, audience: str, *,
                 leeway: float = LEEWAY) -> None:
        if not issuer or not audience:
            raise JwksError("a JWKS file needs the issuer and audience its tokens must "
                            "name: give --jwt-issuer and --jwt-audience")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._keys = WatchedFile(jwks_path, "JWKS file", parse_jwks, error=JwksError)

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; an :class:`AuthError` saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the bearer token is neither an API token of "
                                             "this server nor a JWT") from None
        key = self._keys.value().for_token(header.get("kid"))
        try:
            claims = jwt.decode(token, key=key, algorithms=[key.algorithm_name],
                                audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired_token", "the JWT has expired; get a new one",
                            principal=f"kid:{key.key_id}") from None
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"the JWT is not valid here: {exc}",
                            principal=f"kid:{key.key_id}") from None
        scopes = scopes_named(claims.get("scope")) | scopes_named(claims.get("scp"))
        return Principal(f"jwt:{_subject(claims)}", scopes)


def _subject(claims: dict[str, Any]) -> str:
    for name in ("sub", "client_id", "azp"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return json.dumps(value)[1:-1][:200]  # escaped: a log line stays one line
    return "?"
