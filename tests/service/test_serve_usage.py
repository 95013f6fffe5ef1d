"""``concordia serve`` refuses to start when it could not serve as asked (exit 2)."""

from __future__ import annotations

import pytest

from concordia.cli import main


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["serve"], {}, "name the handlers to run (--handlers MODULE), or serve with --no-worker"),
    (["serve", "--no-worker", "--concurrency", "0"], {}, "--concurrency must be at least 1"),
    (["serve", "--no-worker", "--max-body", "10"], {}, "--max-body must be at least 1024"),
    (["serve", "--no-worker"], {"CONCORDIA_WEBHOOK_SECRETS": "short"},
     "webhook secret from given is 5 characters long; use at least 16"),
    (["serve", "--no-worker", "--webhook-secrets-file", "/nonexistent/secrets"], {},
     "webhook secrets file /nonexistent/secrets: No such file or directory"),
    (["serve", "--handlers", "no_such_module_here"], {},
     "--handlers no_such_module_here: no module named 'no_such_module_here'"),
    (["serve", "--no-worker", "--host", "0.0.0.0"], {},
     "--host 0.0.0.0 is beyond loopback and no API credentials are configured: set "
     "CONCORDIA_API_TOKENS (ID:SCOPES:TOKEN), --api-tokens-file or --jwks-file"),
    (["serve", "--no-worker", "--host", "concordia.internal"], {},
     "is beyond loopback and no API credentials are configured"),
    # past the host check: the next problem is the one reported
    (["serve", "--host", "0.0.0.0", "--insecure-no-auth", "--handlers", "no_such_module"], {},
     "--handlers no_such_module: no module named"),
    (["serve", "--host", "0.0.0.0", "--handlers", "no_such_module"],
     {"CONCORDIA_API_TOKENS": f"ops:concordia.read:{'t' * 32}"},
     "--handlers no_such_module: no module named"),
    (["serve", "--no-worker", "--insecure-no-auth"],
     {"CONCORDIA_API_TOKENS": f"ops:concordia.read:{'t' * 32}"},
     "--insecure-no-auth with credentials configured"),
    (["serve", "--no-worker"], {"CONCORDIA_API_TOKENS": "ops:concordia.read:short"},
     "API token 'ops' from given must be at least 32 characters"),
    (["serve", "--no-worker", "--api-tokens-file", "/nonexistent/tokens"], {},
     "API tokens file /nonexistent/tokens: No such file or directory"),
    (["serve", "--no-worker", "--jwks-file", "/nonexistent/jwks.json", "--jwt-issuer", "i",
      "--jwt-audience", "a"], {}, "JWKS file /nonexistent/jwks.json: No such file"),
    (["serve", "--no-worker", "--jwt-issuer", "https://login.example/"], {},
     "--jwt-issuer and --jwt-audience go with --jwks-file"),
    (["serve", "--no-worker"], {"CONCORDIA_WEBHOOK_SECRETS": "whsec_c2hvcnQ="},
     "Standard Webhooks keys have at least 24"),
])
def test_serve_says_why_it_cannot_start(argv: list[str], env: dict[str, str], message: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONCORDIA_WEBHOOK_SECRETS", "CONCORDIA_API_TOKENS", "CONCORDIA_HOST",
                 "CONCORDIA_API_TOKENS_FILE", "CONCORDIA_JWKS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1  # one line
