"""``concordia relay`` and ``concordia consume`` as processes on the real servers: the relay
empties the outbox into JetStream, the consumer starts the runs JetStream's events
trigger; both stop cleanly on SIGTERM (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from concordia import Catalog, Engine, VirtualClock, new_event
from concordia.events.nats import JetStreamSettings
from concordia.store import open_store
from tests.events_runtime import domain
from tests.natsutil import delete_stream, new_settings, publish, stream_messages
from tests.pg import drop_schema, new_schema, schema_url

pytestmark = [pytest.mark.postgres, pytest.mark.nats]
ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[str, JetStreamSettings, Path]]:
    schema, settings = new_schema(), new_settings()
    defs = domain.write_domain(tmp_path / "defs")
    yield schema_url(schema), settings, defs
    delete_stream(settings)
    drop_schema(schema)


def command(name: str, store: str, settings: JetStreamSettings, defs: Path,
            log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as err:  # the child has its own copy of the descriptor
        return _popen(name, store, settings, defs, err)


def _popen(name: str, store: str, settings: JetStreamSettings, defs: Path,
           err: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "concordia.cli", name, "--store", store, "--bus", settings.url,
         "--stream", settings.stream, "--subject-prefix", settings.prefix,
         "--definitions", str(defs)], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()


def test_relay_publishes_the_outbox_and_stops_on_sigterm(
        env: tuple[str, JetStreamSettings, Path], tmp_path: Path) -> None:
    store, settings, defs = env
    with Engine(Catalog.load_strict([str(defs)]), domain.registry(), store,
                clock=VirtualClock()) as engine:
        run = engine.start("last_wait", {"order_id": "o-1"})
        engine.run_until_idle()
        engine.deliver(new_event("shop.payment.settled", {"order_id": "o-1", "amount": 3.0},
                                 source="urn:pay", version=1))
        engine.run_until_idle()
        assert engine.get_run(run.id).status == "completed"
        pending = [e["id"] for _, e in engine.store.outbox_pending(10)]
    assert pending  # shop.order.completed, persistent
    log = tmp_path / "relay.err"
    relay = command("relay", store, settings, defs, log)
    try:
        until(lambda: {e["id"] for _, e in stream_messages(settings)} >= set(pending),
              "the outbox reaching JetStream")
    finally:
        stop(relay, log)
    reader = open_store(store, readonly=True)
    try:
        assert reader.outbox_pending(10) == []
    finally:
        reader.close()


def test_consume_starts_the_runs_its_events_trigger(
        env: tuple[str, JetStreamSettings, Path], tmp_path: Path) -> None:
    store, settings, defs = env
    open_store(store).close()
    placed = new_event("shop.order.placed", {"order_id": "o-7"}, source="urn:shop",
                       version=1).to_dict()
    publish(settings, placed, placed)  # sent twice: one run
    log = tmp_path / "consume.err"
    consume = command("consume", store, settings, defs, log)

    def started() -> list[str]:
        reader = open_store(store, readonly=True)
        try:
            return [r.id for r in reader.list_runs(saga="checkout")]
        finally:
            reader.close()

    try:
        until(lambda: bool(started()), "a run started from JetStream")
        time.sleep(1.0)
    finally:
        stop(consume, log)
    assert len(started()) == 1
