"""The demo's outside world on NATS JetStream: the Cerebros bridge publishes its completion
callback to JetStream, and a durable consumer delivers it back into the engine, as in a
deployment where the bridge and the engine share only the bus."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from concordia import Engine, JetStreamSettings, NatsBus, NatsConsumer

BRIDGE_TIMEOUT = 30.0


class JetStreamCallbacks:
    """Publishes callbacks to JetStream and consumes them back into ``engine``."""

    def __init__(self, url: str, engine: Engine, *, stream: str = "CONCORDIA",
                 prefix: str = "concordia.events") -> None:
        self.settings = JetStreamSettings(url=url, stream=stream, prefix=prefix)
        self.engine = engine
        self.bridge = NatsBus(self.settings)  # the Cerebros bridge's own publisher
        # A consumer of this demo's own: it reads what is published from now on, and the
        # server forgets it a minute after the demo ends.
        self.consumer = NatsConsumer(
            self.settings, durable=f"thunderline-demo-{uuid.uuid4().hex[:8]}",
            filter_subject=self.settings.subject("ml.training.completed"),
            only_new=True, inactive_threshold=60.0)
        asyncio.run(self.consumer.subscribe())
        self.through_bus: set[str] = set()  # event ids delivered from JetStream

    def send(self, envelope: dict[str, Any]) -> None:
        """The bridge publishes; the engine's consumer delivers it (waits until it did)."""
        self.bridge.publish(envelope)
        asyncio.run(self._consume_until(envelope["id"]))

    async def _consume_until(self, event_id: str) -> None:
        async def deliver(events: list[dict[str, Any]]) -> None:
            self.engine.deliver_many(events)
            self.through_bus.update(e["id"] for e in events)

        task = asyncio.create_task(self.consumer.run(
            deliver, stop_when=lambda: event_id in self.through_bus))
        try:
            await asyncio.wait_for(asyncio.shield(task), BRIDGE_TIMEOUT)
        except TimeoutError:
            self.consumer.stop()
            await task
            raise RuntimeError(f"the callback {event_id} did not come back through "
                               f"JetStream within {BRIDGE_TIMEOUT:g}s") from None

    def close(self) -> None:
        self.bridge.close()
