"""A bus that is not there yet: the consumer waits for it and then delivers, the relay
keeps the outbox until it can publish (each on a NATS server of the test's own, on a
free loopback port, so the shared one is never disturbed)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia import Catalog, Engine, VirtualClock, new_event
from concordia.events.nats import JetStreamSettings, NatsBus, NatsConsumer
from tests.events_runtime import domain
from tests.natsutil import publish, stream_messages

pytestmark = pytest.mark.nats
NATS_SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A NATS server with JetStream on ``port``, started and stopped by the test."""

    def __init__(self, port: int, store: Path) -> None:
        self.port, self.store = port, store
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
             str(self.store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the test's NATS server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(free_port(), tmp_path / "js")
    try:
        yield made
    finally:
        made.stop()


def test_a_consumer_started_before_the_server_delivers_once_it_is_up(
        server: Server) -> None:
    settings = JetStreamSettings(url=f"nats://127.0.0.1:{server.port}")
    consumer = NatsConsumer(settings, durable="late")
    got: list[str] = []
    event = new_event("shop.order.placed", {"order_id": "o-1"}, source="urn:shop",
                      version=1).to_dict()

    async def deliver(events: list[dict[str, Any]]) -> None:
        got.extend(e["id"] for e in events)

    async def main() -> None:
        task = asyncio.create_task(consumer.run(deliver))
        await asyncio.sleep(1.5)  # connecting fails meanwhile, and is tried again
        assert not task.done()
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(publish, settings, event)
        deadline = time.monotonic() + 20
        while not got:
            assert time.monotonic() < deadline, "nothing delivered once the server was up"
            await asyncio.sleep(0.05)
        consumer.stop()
        await task

    asyncio.run(main())
    assert got == [event["id"]]


def test_the_relay_keeps_the_outbox_while_the_bus_is_down(server: Server,
                                                          tmp_path: Path) -> None:
    settings = JetStreamSettings(url=f"nats://127.0.0.1:{server.port}", timeout=1.0)
    bus = NatsBus(settings)
    catalog = Catalog.load_strict([str(domain.write_domain(tmp_path / "defs"))])
    try:
        with Engine(catalog, domain.registry(), f"sqlite:///{tmp_path / 'runs.db'}",
                    clock=VirtualClock(), bus=bus) as engine:
            engine.start("last_wait", {"order_id": "o-1"})
            engine.run_until_idle()
            engine.deliver(new_event("shop.payment.settled", {"order_id": "o-1",
                                                              "amount": 2.0},
                                     source="urn:pay", version=1))
            engine.run_until_idle()  # its relay round fails: the bus is down
            pending = engine.store.outbox_pending(10)
            assert [e["type"] for _, e in pending] == ["shop.order.completed"]
            server.start()
            assert engine.relay_outbox() == 1
            assert engine.store.outbox_pending(10) == []
        assert [e["id"] for _, e in stream_messages(settings)] == [pending[0][1]["id"]]
    finally:
        bus.close()
