"""The credentials a server takes, and the one question asked of them: who sent this
``Authorization`` header?

``Authorization: Bearer <credential>``, where the credential is an API token
(:mod:`.api_tokens`) or, when a JWKS file is configured, a JWT (:mod:`.jwt_bearer`).
Tokens are looked up first (a hash and constant-time compares); a credential that is
not one and has a JWT's shape is verified as a JWT. No cookie is ever read: a browser
sends this header only when a script of the page adds it, which a page of another site
cannot do for this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concordia.service.api_tokens import TOKEN_CHARS, ApiTokens
from concordia.service.jwt_bearer import MAX_TOKEN_LENGTH, JwtVerifier
from concordia.service.scopes import AuthError, Principal


@dataclass
class Credentials:
    """API tokens and (optionally) a JWT verifier; empty, nothing authenticates."""

    tokens: ApiTokens = field(default_factory=ApiTokens)
    jwt: JwtVerifier | None = None

    def configured(self) -> bool:
        return self.jwt is not None or bool(self.tokens)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header; an :class:`AuthError` if none."""
        credential = bearer(authorization)
        principal = self.tokens.authenticate(credential)
        if principal is not None:
            return principal
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        raise AuthError("invalid_token", "the bearer token is not one of this server's API "
                                         "tokens" + (" nor a JWT" if self.jwt else ""))


def bearer(authorization: str | None) -> str:
    """The credential of ``Authorization: Bearer <credential>``."""
    if authorization is None or not authorization.strip():
        raise AuthError("missing", "this API needs credentials: send Authorization: Bearer "
                                   "<API token or JWT>")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthError("invalid_token", "send the credential as Authorization: Bearer "
                                         "<API token or JWT>")
    if len(credential) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.fullmatch(credential):
        raise AuthError("invalid_token", "the bearer credential is not a token (at most "
                                         f"{MAX_TOKEN_LENGTH} characters of A-Z a-z 0-9 "
                                         "- . _ ~ + /)")
    return credential
