"""The main job: the demo runs every scenario on SQLite and every invariant holds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from concordia import Catalog, Engine, Registry
from tests.conftest import ROOT
from thunderline.demo import main


def test_demo_exits_zero_and_reports_every_scenario(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.time()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    try:
        code = main(["--store", store, "--world", str(tmp_path / "world.db")])
    finally:
        structlog.reset_defaults()  # the demo points logging at its own file
    ended = time.time()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "20/20 scenarios held every invariant" in out
    # GAP-002: the adapter fan-out failing midway is undone adapter by adapter.
    assert "fan-out)" in out
    assert "per-adapter = each moved adapter undone by its own compensation" in " ".join(
        out.split())
    # Piped (as here), the table wraps between words and never cuts one short.
    for word in ("user_provisioning", "upm_activation", "cerebros_nas", "policy_check",
                 "create_default_community", "(timeout)"):
        assert word in out.split(), word
    assert "…" not in out
    # No bus: the legend does not explain one.
    assert "bus =" not in out
    assert "JetStream" not in out
    # Each run starts stamped with the real time (only timers see the skipped hours).
    engine = Engine(Catalog(), Registry(), store, check_bindings=False)
    try:
        runs = engine.list_runs(limit=100)
    finally:
        engine.close()
    assert len(runs) == 20
    assert all(started - 1 <= run.created_at <= ended + 1 for run in runs), [
        run.created_at for run in runs]
    assert (tmp_path / "world.db").exists()


_WITHOUT = """
import sys
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"psycopg", "psycopg_pool", "nats"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from thunderline.demo import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["--store", "postgresql://127.0.0.1:5432/test"],
                                  ["--bus", "nats://127.0.0.1:4222"]], ids=["postgres", "nats"])
def test_a_missing_extra_is_one_line(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("python -m thunderline.demo: error: ")
    assert "pip install 'concordia-sagas[" in line


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
        # The bus was used: the legend explains its invariant.
        assert "bus = the completion came through JetStream" in out
        assert "0 persistent event(s) left unpublished" in out
        types = [event["type"] for _, event in stream_messages(settings)]
        assert types.count("ml.training.completed") == 2  # the bridge's callbacks
        assert "ml.run.completed" in types  # relayed from the engine's outbox
    finally:
        structlog.reset_defaults()
        delete_stream(settings)
        drop_schema(schema)
