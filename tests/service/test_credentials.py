"""API tokens and bearer JWTs: how they are configured, kept and checked."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from concordia.service.api_tokens import ApiTokens, TokensError
from concordia.service.credentials import Credentials
from concordia.service.jwt_bearer import JwksError, JwtVerifier
from concordia.service.scopes import AuthError, Scope
from tests.service.conftest import AUDIENCE, ISSUER, JWT_KEY, jwks_file, jwt_for

TOKEN = "t" * 40


def test_tokens_are_entries_of_id_scopes_and_token_and_only_their_digest_is_kept() -> None:
    tokens = ApiTokens([f"dash:concordia.read:{TOKEN}",
                        f"ops:concordia.read,concordia.operate:{'o' * 32}"])
    principal = tokens.require(TOKEN)
    assert (principal.name, principal.scopes) == ("token:dash", {Scope.READ})
    assert tokens.require("o" * 32).scopes == {Scope.READ, Scope.OPERATE}
    assert tokens.authenticate("x" * 40) is None
    kept = repr(tokens.tokens())
    assert TOKEN not in kept
    assert "o" * 32 not in kept
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert tokens.tokens()[0].digest.hex() == digest
    from_digest = ApiTokens([f"dash:concordia.read:sha256:{digest}"])
    assert from_digest.require(TOKEN).name == "token:dash"


@pytest.mark.parametrize(("entry", "message"), [
    ("no-colons", "is not ID:SCOPES:TOKEN"),
    (f"bad id!:concordia.read:{TOKEN}", "use 1 to 64 letters"),
    (f"a:concordia.admin:{TOKEN}", "scopes must be concordia.operate and/or concordia.read"),
    (f"a::{TOKEN}", "scopes must be"),
    ("a:concordia.read:short", "at least 32 characters"),
    (f"a:concordia.read:{'t' * 31}\"", "at least 32 characters"),
    ("a:concordia.read:sha256:abc", "at least 32 characters"),
])
def test_an_unusable_token_entry_is_refused_with_what_to_do(entry: str, message: str) -> None:
    with pytest.raises(TokensError, match=message):
        ApiTokens([entry])


def test_a_token_id_given_twice_is_refused() -> None:
    with pytest.raises(TokensError, match="'a' is given twice"):
        ApiTokens([f"a:concordia.read:{TOKEN}", f"a:concordia.operate:{'u' * 32}"])


def test_tokens_come_from_the_environment_and_a_file_read_again_when_it_changes(
        tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    first, second = "1" * 40, "2" * 40
    path.write_text(f"# the dashboard's\nfile:concordia.read:{first}\n")
    tokens = ApiTokens.from_environment(str(path), environ={
        "CONCORDIA_API_TOKENS": f"env-a:concordia.read:{TOKEN} env-b:concordia.operate:"
                                f"{'e' * 32}"})
    assert [t.id for t in tokens.tokens()] == ["env-a", "env-b", "file"]
    assert tokens.require(first).name == "token:file"
    mtime = path.stat().st_mtime_ns
    path.write_text(f"# the dashboard's\nfile:concordia.read:{second}\n")  # same size
    os.utime(path, ns=(mtime, mtime))
    assert tokens.authenticate(first) is None
    assert tokens.require(second).name == "token:file"
    path.write_text("broken\n")  # a mistake while serving: the tokens read last stay
    assert tokens.require(second).name == "token:file"
    with pytest.raises(TokensError, match="No such file"):
        ApiTokens(path=str(tmp_path / "missing"))


def test_a_server_given_no_credentials_makes_one_token_for_its_lifetime() -> None:
    tokens, token = ApiTokens.ephemeral()
    assert tokens.require(token).scopes == {Scope.READ, Scope.OPERATE}
    assert ApiTokens.ephemeral()[1] != token


@pytest.mark.parametrize(("header", "reason"), [
    (None, "missing"), ("", "missing"), ("Basic dXNlcjpwYXNz", "invalid_token"),
    ("Bearer", "invalid_token"), ("Bearer " + "x" * 9000, "invalid_token"),
    ("Bearer has spaces inside", "invalid_token"), ("Bearer tök" + "x" * 40, "invalid_token"),
    (f"Bearer {'w' * 40}", "invalid_token"),
])
def test_what_is_not_a_known_bearer_credential_is_refused(header: str | None,
                                                          reason: str) -> None:
    creds = Credentials(ApiTokens([f"a:concordia.read:{TOKEN}"]))
    with pytest.raises(AuthError) as caught:
        creds.authenticate(header)
    assert caught.value.reason == reason
    assert creds.authenticate(f"bearer  {TOKEN} ").name == "token:a"


@pytest.fixture
def verifier(tmp_path: Path) -> JwtVerifier:
    return JwtVerifier(str(jwks_file(tmp_path)), ISSUER, AUDIENCE)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "exp": now + 60,
              "scope": "concordia.read"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], key: Any = JWT_KEY, alg: str = "ES256",
            kid: str | None = "k1") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def test_a_valid_jwt_gives_its_subject_and_scopes(verifier: JwtVerifier) -> None:
    principal = verifier.verify(jwt_for("concordia.operate openid"))
    assert (principal.name, principal.scopes) == ("jwt:user-7", {Scope.OPERATE})
    assert verifier.verify(_signed(_claims(scope=None, scp="concordia.read"))).scopes == {
        Scope.READ}
    within_leeway = _signed(_claims(exp=int(time.time()) - 10))
    assert verifier.verify(within_leeway).name == "jwt:s"


def _unsigned(claims: dict[str, Any]) -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return f"{head.decode()}.{body.decode()}."


def _hs256_with_the_public_key(claims: dict[str, Any]) -> str:
    from cryptography.hazmat.primitives import serialization

    public = JWT_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    import hmac

    head = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"k1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signed = head + b"." + body
    mac = hmac.new(public, signed, "sha256").digest()
    return (signed + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


REFUSED = [
    ("expired", lambda: _signed(_claims(exp=int(time.time()) - 120)), "expired_token"),
    ("another audience", lambda: _signed(_claims(aud="other")), "invalid_token"),
    ("another issuer", lambda: _signed(_claims(iss="https://evil.example/")), "invalid_token"),
    ("no exp", lambda: _signed(_claims(exp=None)), "invalid_token"),
    ("no aud", lambda: _signed(_claims(aud=None)), "invalid_token"),
    ("not yet valid", lambda: _signed(_claims(nbf=int(time.time()) + 600)), "invalid_token"),
    ("another key", lambda: _signed(_claims(), ec.generate_private_key(ec.SECP256R1())),
     "invalid_token"),
    ("unknown kid", lambda: _signed(_claims(), kid="k9"), "invalid_token"),
    ("alg none", lambda: _unsigned(_claims()), "invalid_token"),
    ("HS256 keyed with the public key", lambda: _hs256_with_the_public_key(_claims()),
     "invalid_token"),
    ("not a JWT", lambda: "a.b.c", "invalid_token"),
]


@pytest.mark.parametrize(("case", "make", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_jwt_that_does_not_hold_is_refused(verifier: JwtVerifier, case: str, make: Any,
                                             reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        verifier.verify(make())
    assert caught.value.reason == reason


def test_the_jwks_file_holds_public_signing_keys_and_is_read_again_on_rotation(
        tmp_path: Path) -> None:
    path = jwks_file(tmp_path)
    verifier = JwtVerifier(str(path), ISSUER, AUDIENCE)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(new_key.public_key()))
    rotated = _signed(_claims(), new_key, "RS256", kid="k2")
    with pytest.raises(AuthError):
        verifier.verify(rotated)
    old = json.loads(path.read_text())["keys"]
    path.write_text(json.dumps({"keys": [*old, {**jwk, "kid": "k2"},
                                         {"kty": "RSA", "use": "enc", "n": "x", "e": "y"}]}))
    assert verifier.verify(rotated).name == "jwt:s"
    assert verifier.verify(jwt_for()).name == "jwt:user-7"


@pytest.mark.parametrize(("document", "message"), [
    ("{", "not JSON"),
    ('{"keys": []}', "not a JSON Web Key Set"),
    ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "secret or private key"),
    ('{"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]}',
     "secret or private key"),
    ('{"keys": [{"kty": "nope"}]}', "key 0"),
])
def test_an_unusable_jwks_file_is_refused_at_start(tmp_path: Path, document: str,
                                                   message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(JwksError, match=message):
        JwtVerifier(str(path), ISSUER, AUDIENCE)


def test_a_jwks_file_needs_an_issuer_and_an_audience(tmp_path: Path) -> None:
    with pytest.raises(JwksError, match="--jwt-issuer and --jwt-audience"):
        JwtVerifier(str(jwks_file(tmp_path)), ISSUER, "")
