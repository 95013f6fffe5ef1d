"""API tokens: opaque bearer credentials, each with an id and its scopes, held hashed.

Tokens are configured as webhook secrets are: in the environment
(``CONCORDIA_API_TOKENS``, entries separated by whitespace) or a file
(``--api-tokens-file``, one entry a line, ``#`` comments, read again when its content
changes). An entry is ``ID:SCOPES:TOKEN``::

    dashboard:concordia.read:3f9c0d...            # read only
    deploy-bot:concordia.read,concordia.operate:a81e...
    oncall:concordia.read,concordia.operate:sha256:5e884898...  # the token's SHA-256 only

``ID`` (letters, digits, ``.``, ``_``, ``-``; at most 64) is what logs and metrics name;
``TOKEN`` is at least 32 visible characters of the bearer-token alphabet (``openssl rand
-hex 32`` makes one), or ``sha256:`` and the hex SHA-256 of the token, so that the file
need not hold the token itself. Several tokens may be active at once, which is how one is
rotated: add the new one, move clients to it, remove the old.

Only SHA-256 digests are kept in memory; a presented token is hashed and compared with
every digest in constant time, without an early exit. (A fast hash is right here: the
tokens are random, so there is nothing to guess that a slow hash would protect.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from concordia.service.scopes import ALL_SCOPES, AuthError, Principal, Scope
from concordia.service.watched import ConfigFileError, WatchedFile

ENV_TOKENS = "CONCORDIA_API_TOKENS"
MIN_TOKEN_LENGTH = 32
# RFC 6750's b64token: what a bearer credential may be made of.
TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


class TokensError(ConfigFileError):
    """A configured API token cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    scopes: frozenset[Scope]
    digest: bytes  # SHA-256 of the token


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_entry(entry: str, where: str) -> Token:
    """One ``ID:SCOPES:TOKEN`` entry (see the module docstring)."""
    parts = entry.split(":", 2)
    if len(parts) != 3:
        raise TokensError(f"API token entry from {where} is not ID:SCOPES:TOKEN "
                          f"(e.g. dashboard:{Scope.READ}:$(openssl rand -hex 32))")
    token_id, scope_text, token = parts
    if not _ID.fullmatch(token_id):
        raise TokensError(f"API token id {token_id[:70]!r} from {where}: use 1 to 64 letters, "
                          "digits, '.', '_' or '-', starting with a letter or digit")
    known = {s.value: s for s in Scope}
    names = [s for s in scope_text.split(",") if s]
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise TokensError(f"API token {token_id!r} from {where}: scopes must be "
                          f"{' and/or '.join(sorted(known))}, comma-separated; not "
                          f"{scope_text[:80]!r}")
    scopes = frozenset(known[s] for s in names)
    hashed = _DIGEST.fullmatch(token)
    if hashed is not None:
        return Token(token_id, scopes, bytes.fromhex(hashed.group(1)))
    if len(token) < MIN_TOKEN_LENGTH or not TOKEN_CHARS.fullmatch(token):
        raise TokensError(f"API token {token_id!r} from {where} must be at least "
                          f"{MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / "
                          "(e.g. `openssl rand -hex 32`), or sha256:<hex digest>")
    return Token(token_id, scopes, digest_of(token))


def parse_entries(entries: Iterable[str], where: str) -> tuple[Token, ...]:
    tokens = tuple(parse_entry(e, where) for e in entries)
    ids = [t.id for t in tokens]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise TokensError(f"API token id {repeated[0]!r} is given twice in {where}; each "
                          "token needs its own id")
    return tokens


class ApiTokens:
    """The active API tokens: from the environment, a file, or given."""

    def __init__(self, entries: Iterable[str] = (), *, path: str | None = None) -> None:
        self._given = parse_entries(entries, "given")
        self._file: WatchedFile[tuple[Token, ...]] | None = None
        if path is not None:
            self._file = WatchedFile(path, "API tokens file", _file_tokens(path),
                                     error=TokensError)

    @classmethod
    def from_environment(cls, path: str | None = None,
                         environ: Mapping[str, str] | None = None) -> ApiTokens:
        """Tokens from ``CONCORDIA_API_TOKENS`` and, if given, the file ``path``."""
        env = os.environ if environ is None else environ
        return cls(env.get(ENV_TOKENS, "").split(), path=path)

    @classmethod
    def ephemeral(cls) -> tuple[ApiTokens, str]:
        """A ring of one new random token with every scope, id ``ephemeral``, and the
        token (for a server on loopback that was given no credentials)."""
        token = secrets.token_urlsafe(32)
        scopes = ",".join(sorted(ALL_SCOPES))
        return cls([f"ephemeral:{scopes}:{token}"]), token

    def tokens(self) -> tuple[Token, ...]:
        if self._file is None:
            return self._given
        return self._given + self._file.value()

    def __bool__(self) -> bool:
        return bool(self.tokens())

    def authenticate(self, presented: str) -> Principal | None:
        """The principal ``presented`` is the token of, or None."""
        digest = digest_of(presented)
        found: Token | None = None
        for token in self.tokens():
            # Every digest is compared: the time taken says nothing of which one matched.
            if hmac.compare_digest(token.digest, digest):
                found = token
        if found is None:
            return None
        return Principal(f"token:{found.id}", found.scopes)

    def require(self, presented: str) -> Principal:
        principal = self.authenticate(presented)
        if principal is None:
            raise AuthError("invalid_token", "the bearer token is not one of this server's "
                                             "API tokens")
        return principal


def _file_tokens(path: str) -> Callable[[bytes], tuple[Token, ...]]:
    def parse(raw: bytes) -> tuple[Token, ...]:
        lines = [line.split("#", 1)[0].strip() for line in raw.decode("utf-8").splitlines()]
        return parse_entries([line for line in lines if line], path)

    return parse
