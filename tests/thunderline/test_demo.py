"""The main job: the demo runs every scenario on SQLite and every invariant holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from thunderline.demo import main


def test_demo_exits_zero_and_reports_every_scenario(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["--store", f"sqlite:///{tmp_path / 'runs.db'}",
                     "--world", str(tmp_path / "world.db")])
    finally:
        structlog.reset_defaults()  # the demo points logging at its own file
    out = capsys.readouterr().out
    assert code == 0, out
    assert "20/20 scenarios held every invariant" in out
    # GAP-002: the adapter fan-out failing midway is undone adapter by adapter (the
    # table may wrap the scenario's name, never its words).
    assert "fan-out)" in out
    assert "per-adapter = each moved adapter undone by its own compensation" in " ".join(
        out.split())
    # (the table may truncate long names on a narrow terminal)
    for saga in ("user_provisi", "upm_activati", "cerebros_nas", "policy_check", "timeout"):
        assert saga in out
    assert (tmp_path / "runs.db").exists()
    assert (tmp_path / "world.db").exists()


@pytest.mark.postgres
@pytest.mark.nats
def test_demo_on_postgresql_and_jetstream_holds_every_invariant(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.natsutil import delete_stream, new_settings, stream_messages
    from tests.pg import drop_schema, new_schema, schema_url

    schema, settings = new_schema(), new_settings()
    try:
        code = main(["--store", schema_url(schema), "--bus", settings.url,
                     "--stream", settings.stream, "--subject-prefix", settings.prefix,
                     "--world", str(tmp_path / "world.db")])
        out = " ".join(capsys.readouterr().out.split())  # as the terminal wrapped it
        assert code == 0, out
        assert "20/20 scenarios held every invariant" in out
        assert "2 Cerebros callback(s) came through JetStream" in out
        assert "0 persistent event(s) left unpublished" in out
        types = [event["type"] for _, event in stream_messages(settings)]
        assert types.count("ml.training.completed") == 2  # the bridge's callbacks
        assert "ml.run.completed" in types  # relayed from the engine's outbox
    finally:
        structlog.reset_defaults()
        delete_stream(settings)
        drop_schema(schema)
