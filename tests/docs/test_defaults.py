"""One statement of each default, and it is the code's: the table in operations.md is
checked against the engine, the models and the command line, and every other mention of
the attempt timeout's default says the same."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from concordia.cli import build_parser
from concordia.cli.common import DEFAULT_STORE
from concordia.definitions import models
from concordia.runtime.config import (
    DEFAULT_HANDLER_THREADS,
    DEFAULT_LEASE_TTL,
    DEFAULT_STEP_TIMEOUT,
    EngineConfig,
)
from tests.conftest import ROOT

DOCS = Path(ROOT, "docs")


def _table() -> dict[str, str]:
    text = (DOCS / "operations.md").read_text("utf-8")
    section = text.split("\n## Defaults\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `([^`]+)`.*\|$", section, re.MULTILINE)
    return dict(rows)


def _option(command: str, option: str) -> Any:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return action.default


def test_every_documented_default_is_the_codes() -> None:
    code = {
        "attempt timeout, when neither the step nor its saga's `defaults` sets one":
            DEFAULT_STEP_TIMEOUT,
        "lease of a run by a worker": DEFAULT_LEASE_TTL,
        "an event no run awaits yet is kept for": EngineConfig().early_event_ttl,
        "threads for sync handlers": DEFAULT_HANDLER_THREADS,
        "attempts of an action": models.RetryPolicy().attempts,
        "attempts of a compensation": models.DEFAULT_COMPENSATION_RETRY.attempts,
        "store": DEFAULT_STORE,
        "runs a worker drives at once": _option("worker", "--concurrency"),
        "runs `concordia serve`'s worker drives at once": _option("serve", "--concurrency"),
        "how long `concordia run` waits for a retry timer": _option("run", "--wait"),
        "largest request body `concordia serve` reads": _option("serve", "--max-body"),
        "accepted clock skew of a signed event": _option("serve", "--signature-tolerance"),
        "address `concordia serve` listens on":
            f"{_option('serve', '--host')}:{_option('serve', '--port')}",
    }
    documented = _table()
    assert set(documented) == set(code), "the table and this test list different defaults"
    for what, value in code.items():
        shown = documented[what]
        expected = value if isinstance(value, str) else float(value)
        assert (shown if isinstance(value, str) else float(shown)) == expected, what
    # The command line's lease default is the engine's.
    assert _option("worker", "--lease-ttl") == DEFAULT_LEASE_TTL


def test_every_mention_of_the_attempt_timeouts_default_agrees() -> None:
    texts = {path.name: path.read_text("utf-8") for path in
             [Path(ROOT, "README.md"), *sorted(DOCS.glob("*.md"))]}
    mentions = {name: re.findall(r"`step_timeout`[^.]*?\(?(\d+) ?s\b", " ".join(text.split()))
                for name, text in texts.items()}
    found = [int(v) for values in mentions.values() for v in values]
    assert len(found) >= 3, mentions  # the README, the guide, operations (and reference)
    assert set(found) == {int(DEFAULT_STEP_TIMEOUT)}, mentions
    for name, text in texts.items():
        flat = " ".join(text.split())
        assert "there is none by default" not in flat, name
        assert "(default: none)" not in flat, name
