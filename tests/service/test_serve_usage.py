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
])
def test_serve_says_why_it_cannot_start(argv: list[str], env: dict[str, str], message: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCORDIA_WEBHOOK_SECRETS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
