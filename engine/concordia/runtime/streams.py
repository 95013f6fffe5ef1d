"""The long-running loops that connect an engine to a bus: the outbox relay and the
inbound consumer, as ``concordia relay``, ``concordia consume`` and ``concordia worker
--relay --consume`` run them.

The relay publishes pending persistent events in outbox order and marks each published
once the bus acknowledged it; a refusal (the bus down) stops the round, and the next
round, shortly after, starts again from the first unpublished event. Several relays on
one store may publish an event twice; the bus drops the copy by its id (JetStream's
``Nats-Msg-Id``), and a consumer's inbox drops any copy that gets through.

The consumer hands inbound events to ``engine.deliver_many``; the bus acknowledges
them only after that commit. An event that will never be taken (the taxonomy refuses it,
or the saga it triggers refuses its input) is never retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from concordia.errors import ConcordiaError, StoreError, ValueRefusedError

if TYPE_CHECKING:
    from concordia.events.nats import NatsConsumer
    from concordia.runtime.aengine import AsyncEngine

_log = structlog.get_logger("concordia.streams")


async def relay_forever(engine: AsyncEngine, *, interval: float = 0.1,
                        stop_when: Callable[[], bool] | None = None) -> int:
    """Relay the outbox until ``stop_when()`` (or the engine stops); return how many
    events were published. Ends with one last round."""
    stopping = stop_when or (lambda: engine.stopping)
    sent = 0
    while True:
        last = stopping()
        try:
            sent += await engine.relay_outbox()
        except Exception as exc:  # the store unreachable: next round
            _log.warning("relay.round_failed", error=str(exc) or type(exc).__name__)
        if last:
            return sent
        await asyncio.sleep(interval)


def refused(event: dict[str, Any] | None, error: Exception) -> bool:
    """Whether an event will never be taken, so that redelivering it is pointless: the
    taxonomy refuses it, or the saga it triggers refuses the input it maps from it. The
    store being unreachable is not that: the event comes back."""
    return isinstance(error, ConcordiaError) and (
        isinstance(error, ValueRefusedError) or not isinstance(error, StoreError))


async def consume_forever(engine: AsyncEngine, consumer: NatsConsumer, *,
                          stop_when: Callable[[], bool] | None = None) -> None:
    """Deliver the consumer's events into ``engine`` until ``stop_when()`` (or the
    engine stops)."""

    async def deliver(events: list[dict[str, Any]]) -> None:
        await engine.deliver_many(events)

    await consumer.run(deliver, refuse=refused,
                       stop_when=stop_when or (lambda: engine.stopping))
