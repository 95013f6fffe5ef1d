"""A fleet for the fault tests: a store (a PostgreSQL schema or a SQLite file) and a
JetStream stream of its own, ``concordia worker --relay --consume`` processes, a payment
service that answers each payment request over the bus, and the checks of every
invariant afterwards."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from concordia import Catalog, Engine, Registry
from concordia.events.envelope import new_event
from concordia.events.nats import JetStreamSettings, NatsConsumer, connect, subject_for
from concordia.status import ENDED
from concordia.store import open_store
from tests.natsutil import new_settings, stream_messages
from tests.pg import new_schema, schema_url
from tests.runtime.workers import WorkerProcess
from tests.scale import shop

_NS = uuid.UUID("5d7b0e7e-6c8a-4bde-9a57-3f0c4f3e1a10")


@dataclass
class Fleet:
    """One test's store, stream, definitions and workers."""

    kind: str
    tmp: Path
    store: str = ""
    schema: str | None = None
    settings: JetStreamSettings = field(default_factory=new_settings)
    definitions: Path = Path()
    workers: list[WorkerProcess] = field(default_factory=list)
    generation: int = 0

    def __post_init__(self) -> None:
        if self.kind == "postgres":
            self.schema = new_schema()
            self.store = schema_url(self.schema)
            effects_url = self.store
        else:
            self.store = f"sqlite:///{self.tmp / 'runs.db'}"
            effects_url = str(self.tmp / "effects.db")
        self.effects = shop.Effects(effects_url)
        self.definitions = self.tmp / "definitions"
        self.definitions.mkdir()
        (self.definitions / "events.yaml").write_text(shop.TAXONOMY)
        (self.definitions / "order.yaml").write_text(shop.SAGA)
        open_store(self.store).close()  # created (and migrated) before the workers race
        self.effects.create()
        self.env = {"SCALE_EFFECTS": effects_url}

    def start_worker(self, concurrency: int = 8, lease_ttl: float = 2.0) -> WorkerProcess:
        self.generation += 1
        worker = WorkerProcess(
            self.store, "tests.scale.shop", self.definitions, self.tmp,
            concurrency=concurrency, lease_ttl=lease_ttl, poll_interval=0.2, env=self.env,
            name=f"worker-{self.generation}",
            extra=["--bus", self.settings.url, "--stream", self.settings.stream,
                   "--subject-prefix", self.settings.prefix, "--durable", "workers",
                   "--relay", "--consume"])
        self.workers.append(worker)
        return worker

    def place_orders(self, count: int) -> None:
        events = [replace(new_event("shop.order.placed", {"order_id": shop.order_id(i),
                                                          "plan": shop.plan_for(i)},
                                    source="urn:storefront", version=1),
                          id=str(uuid.uuid5(_NS, f"placed:{i}"))).to_dict()
                  for i in range(count)]
        asyncio.run(_publish(self.settings, events))

    def counts(self) -> Counter[str]:
        store = open_store(self.store, readonly=True)
        try:
            return Counter(str(r.status) for r in store.list_runs(limit=100_000))
        finally:
            store.close()

    def ended(self, count: int) -> bool:
        runs = self.counts()
        return sum(n for s, n in runs.items() if s in ENDED) >= count

    def outbox_empty(self) -> bool:
        store = open_store(self.store, readonly=True)
        try:
            return not store.outbox_pending(1)
        finally:
            store.close()


async def _publish(settings: JetStreamSettings, events: list[dict[str, Any]]) -> None:
    client, js = await connect(settings)
    try:
        for event in events:
            await js.publish(subject_for(settings.prefix, event["type"]),
                             json.dumps(event).encode(), headers={"Nats-Msg-Id": event["id"]})
    finally:
        await client.close()


class PaymentService:
    """Another service on the bus: settles each payment request it reads, publishing
    ``shop.payment.settled`` with an id of the order's (a request read twice is settled
    once, by id)."""

    def __init__(self, settings: JetStreamSettings) -> None:
        self.settings = settings
        self.consumer = NatsConsumer(settings, durable="payments",
                                     filter_subject=subject_for(settings.prefix,
                                                                "shop.payment.requested"))
        self.answered = 0
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> PaymentService:
        self.thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _serve(self) -> None:
        client, js = await connect(self.settings)

        async def answer(events: list[dict[str, Any]]) -> None:
            for event in events:
                order = event["data"]["order_id"]
                settled = replace(new_event(
                    "shop.payment.settled", {"order_id": order,
                                             "amount": event["data"]["amount"]},
                    source="urn:payments", version=1,
                    correlation_id=event.get("correlationid"), causation_id=event["id"]),
                    id=str(uuid.uuid5(_NS, f"settled:{order}"))).to_dict()
                await js.publish(subject_for(self.settings.prefix, settled["type"]),
                                 json.dumps(settled).encode(),
                                 headers={"Nats-Msg-Id": settled["id"]})
                self.answered += 1

        try:
            await self.consumer.run(answer)
        finally:
            await client.close()

    def stop(self) -> None:
        self.consumer.stop()
        self.thread.join(30)
        assert self.error is None, self.error


def check_invariants(fleet: Fleet, count: int) -> dict[str, Any]:
    """Every invariant of the fault tests; returns the figures to report."""
    definitions = Catalog.load_strict([str(fleet.definitions)])
    fleet.effects.close()  # a fresh connection: a restart may have cut the first one
    store = open_store(fleet.store, readonly=True)
    reader = Engine(definitions, Registry(), store, check_bindings=False)
    try:
        runs = store.list_runs(limit=10 * count)
        by_order: dict[str, list[Any]] = {}
        for run in runs:
            by_order.setdefault(run.input["order_id"], []).append(run)
        # One run per order: the order placed was delivered once, however often it came.
        assert sorted(by_order) == [shop.order_id(i) for i in range(count)]
        assert all(len(v) == 1 for v in by_order.values())
        undos = {r[0] for r in fleet.effects.rows("SELECT key FROM effects WHERE phase='undo'")}
        dos = {r[0] for r in fleet.effects.rows("SELECT key FROM effects WHERE phase='do'")}
        statuses: Counter[str] = Counter()
        for i in range(count):
            order, plan = shop.order_id(i), shop.plan_for(i)
            run = by_order[order][0]
            view = reader.get_run(run.id)
            statuses[view.status] += 1
            # Every run terminal, where its plan leads.
            assert view.status == shop.expected_status(plan), (order, plan, view.error)
            undone = shop.expected_undone(plan)
            if view.status == "completed":
                assert set(view.results) == set(shop.STEPS), order
                for step in shop.ACTIONS:
                    assert view.results[step] == shop.result_of(order, step), (order, step)
                    assert f"{run.id}:{step}" in dos, (order, step)
            assert view.compensated_steps() == undone, (order, plan)
            # Compensated exactly once per key: the effects table has one row per key.
            mine = {k for k in undos if k.startswith(run.id + ":")}
            assert mine == {f"{run.id}:{s}:compensate" for s in undone}, (order, mine)
        # No persistent event lost: every one journaled is published, and is in the stream.
        assert store.outbox_pending(1) == []
        journaled = {e["id"]: e for run in runs for e in store.run_events(run.id)}
        persistent = {i: e for i, e in journaled.items() if e["type"] in (
            "shop.payment.requested", "shop.order.shipped", "shop.order.cancelled")}
        messages = stream_messages(fleet.settings)
        ids = Counter(e["id"] for _, e in messages)
        assert all(ids[i] == 1 for i in persistent), "a persistent event missing or doubled"
        # None published twice under two ids: one message per run and type.
        per_run = Counter((e.get("subject"), e["type"]) for _, e in messages
                          if e["source"] == "urn:concordia")
        assert max(per_run.values()) == 1, per_run.most_common(3)
        calls = fleet.effects.rows("SELECT phase, count(*) FROM calls GROUP BY phase")
        return {"runs": len(runs), "statuses": dict(statuses), "messages": len(messages),
                "persistent_events": len(persistent), "calls": dict(calls),
                "effects": len(dos) + len(undos)}
    finally:
        reader.close()
        fleet.effects.close()
