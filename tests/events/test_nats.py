"""NATS JetStream as the bus, on the real server: the relay publishes each persistent
event once (by id), the consumer delivers into the engine and acks after the commit, and
a run crosses the bus both ways (PostgreSQL store, its own schema; its own stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia import Catalog
from concordia.events.envelope import new_event
from concordia.events.nats import JetStreamSettings, NatsBus, NatsConsumer
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.streams import consume_forever, relay_forever
from tests.events_runtime import domain
from tests.events_runtime.conftest import Calls
from tests.natsutil import delete_stream, new_settings, publish, stream_messages
from tests.pg import drop_schema, new_schema, schema_url

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
BOUND = 30.0


@pytest.fixture
def settings() -> Iterator[JetStreamSettings]:
    made = new_settings()
    yield made
    delete_stream(made)


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = new_schema()
    yield schema_url(schema)
    drop_schema(schema)


def placed(order: str) -> dict[str, Any]:
    return new_event("shop.order.placed", {"order_id": order}, source="urn:shop",
                     version=1).to_dict()


def settled(order: str, amount: float) -> dict[str, Any]:
    return new_event("shop.payment.settled", {"order_id": order, "amount": amount},
                     source="urn:payments", version=1).to_dict()


def test_a_bus_publishes_each_event_once_by_id(settings: JetStreamSettings) -> None:
    bus = NatsBus(settings)
    event = placed("o-1")
    try:
        bus.publish(event)
        bus.publish(event)  # a relay that crashed before marking it published
        bus.publish(placed("o-2"))
    finally:
        bus.close()
    got = stream_messages(settings)
    assert [s for s, _ in got] == [f"{settings.prefix}.shop.order.placed"] * 2
    assert [e["id"] for _, e in got] == [event["id"], got[1][1]["id"]]
    assert got[0][1] == event


def test_a_consumer_acks_only_what_was_delivered_and_drops_what_never_will_be(
        settings: JetStreamSettings) -> None:
    good, bad = placed("o-1"), placed("o-2")
    publish(settings, good, bad, {**placed("o-3"), "type": "no.such.event"})
    delivered: list[str] = []
    attempts: list[str] = []

    async def deliver(events: list[dict[str, Any]]) -> None:
        attempts.extend(e["id"] for e in events)
        if len(events) == 1 and events[0]["id"] == bad["id"] and attempts.count(bad["id"]) < 3:
            raise ConnectionError("store down")  # fails twice, then is taken
        if any(e["type"] == "no.such.event" for e in events):
            from concordia.errors import EventError

            raise EventError("unknown event type", event_type="no.such.event")
        delivered.extend(e["id"] for e in events)

    consumer = NatsConsumer(settings, durable="t")

    async def main() -> None:
        from concordia.runtime.streams import refused

        task = asyncio.create_task(consumer.run(deliver, refuse=refused))
        deadline = asyncio.get_running_loop().time() + BOUND
        while bad["id"] not in delivered and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        consumer.stop()
        await task

    asyncio.run(main())
    assert delivered.count(good["id"]) == 1
    assert delivered.count(bad["id"]) == 1  # redelivered after two failures, then taken
    # The unknown type is terminated, never retried: a second consumer run sees nothing.
    again: list[str] = []

    async def rest(events: list[dict[str, Any]]) -> None:
        again.extend(e["id"] for e in events)

    async def second() -> None:
        other = NatsConsumer(settings, durable="t")
        task = asyncio.create_task(other.run(rest))
        await asyncio.sleep(1.5)
        other.stop()
        await task

    asyncio.run(second())
    assert again == []


def test_a_run_started_and_resumed_over_jetstream_publishes_its_events_there(
        tmp_path: Path, settings: JetStreamSettings, pg_url: str) -> None:
    catalog = Catalog.load_strict([str(domain.write_domain(tmp_path / "defs"))])
    calls = Calls()
    publish(settings, placed("o-9"))

    async def main() -> str:
        bus = NatsBus(settings)
        async with AsyncEngine(catalog, domain.registry(calls), pg_url, bus=bus) as engine:
            consumer = NatsConsumer(settings, durable="engine")
            tasks = [asyncio.create_task(engine.work(concurrency=4, poll_interval=0.1)),
                     asyncio.create_task(consume_forever(engine, consumer,
                                                         stop_when=lambda: bool(done))),
                     asyncio.create_task(relay_forever(engine, stop_when=lambda: bool(done)))]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + BOUND
            runs: list[Any] = []
            while not runs and loop.time() < deadline:
                runs = [r for r in await engine.list_runs() if r.status == "suspended"]
                await asyncio.sleep(0.05)
            assert runs, "the order placed over the bus started no run"
            publish_later = asyncio.to_thread(publish, settings, settled("o-9", 12.5))
            await publish_later
            while (await engine.get_run(runs[0].id)).status != "completed":
                assert loop.time() < deadline, "the payment over the bus resumed nothing"
                await asyncio.sleep(0.05)
            done.append(True)
            engine.stop()
            await asyncio.gather(*tasks)
            await bus.aclose()
            return str(runs[0].id)

    done: list[bool] = []
    run_id = asyncio.run(main())
    got = stream_messages(settings)
    types = [e["type"] for _, e in got]
    # In: the order and the payment. Out: the payment request (transient, best effort),
    # the confirmation and the completion (persistent, through the outbox), each once.
    assert sorted(types) == sorted(["shop.order.placed", "shop.payment.settled",
                                    "shop.payment.requested", "shop.order.confirmed",
                                    "shop.order.completed"]), types
    mine = [e for _, e in got if e.get("subject") == run_id]
    assert {e["type"] for e in mine} == {"shop.payment.requested", "shop.order.confirmed",
                                         "shop.order.completed"}
    assert len({e["id"] for _, e in got}) == len(got)


def test_only_errors_that_come_again_have_an_event_redelivered() -> None:
    from concordia.errors import EventError, ExpressionError, InputError, StoreError
    from concordia.runtime.streams import refused

    assert refused(None, EventError("unknown event type"))
    assert refused(None, InputError("checkout", "order_id is required", "order_id"))
    assert refused(None, ExpressionError("event.data.x", "no such key"))
    assert not refused(None, StoreError("the database restarts"))
    assert not refused(None, ConnectionError("reset"))
