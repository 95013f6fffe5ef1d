"""A schema-driven fuzz of the OpenAPI document (schemathesis) against the live server,
with a token holding both scopes: whatever it sends, no answer is a 5xx, and every answer
is one the document declares (its status, its media type, and its body's schema). Also:
the examples, positive and negative, the coverage phase derives from the document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import AUTH, ThreadedServer, make_app

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("CONCORDIA_FUZZ_EXAMPLES", "40"))


def test_no_request_the_document_allows_gets_a_5xx(tmp_path: Path) -> None:
    app, _engine = make_app(f"sqlite:///{tmp_path / 'runs.db'}")
    with ThreadedServer(app) as url:
        cli = Path(sys.executable).with_name("schemathesis")
        result = subprocess.run(
            [str(cli), "run", f"{url}/openapi.json", "--checks",
             "not_a_server_error,status_code_conformance,content_type_conformance,"
             "response_schema_conformance",
             "--header", f"Authorization: {AUTH['Authorization']}",
             "--max-examples", str(EXAMPLES), "--seed", "20261129", "--no-color",
             "--request-timeout", "20", "--generation-database", "none",
             "--suppress-health-check", "all"],
            capture_output=True, text=True, timeout=480, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "passed" in report.lower()
