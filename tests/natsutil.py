"""NATS JetStream for tests: the project's server on loopback, one stream and subject
prefix per test (deleted when it ends)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import nats
import nats.js.errors

from concordia.events.nats import JetStreamSettings

NATS_URL = "nats://127.0.0.1:4222"


def new_settings(**kwargs: Any) -> JetStreamSettings:
    tag = uuid.uuid4().hex[:12]
    return JetStreamSettings(url=NATS_URL, stream=f"T_{tag}", prefix=f"t{tag}.events",
                             **kwargs)


async def _messages(settings: JetStreamSettings) -> list[tuple[str, dict[str, Any]]]:
    client = await nats.connect(settings.url)
    try:
        js = client.jetstream()
        try:
            info = await js.stream_info(settings.stream)
        except nats.js.errors.NotFoundError:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(settings.stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            out.append((msg.subject, json.loads(msg.data or b"null")))
        return out
    finally:
        await client.close()


def stream_messages(settings: JetStreamSettings) -> list[tuple[str, dict[str, Any]]]:
    """Every message the test's stream holds: (subject, event); none if it has no stream."""
    return asyncio.run(_messages(settings))


async def _publish(settings: JetStreamSettings, events: list[dict[str, Any]]) -> None:
    from concordia.events.nats import connect, subject_for

    client, js = await connect(settings)
    try:
        for event in events:
            await js.publish(subject_for(settings.prefix, event["type"]),
                             json.dumps(event).encode(), headers={"Nats-Msg-Id": event["id"]})
    finally:
        await client.close()


def publish(settings: JetStreamSettings, *events: dict[str, Any]) -> None:
    """Publish events as another service would (the stream made if missing)."""
    asyncio.run(_publish(settings, list(events)))


async def _delete(settings: JetStreamSettings) -> None:
    client = await nats.connect(settings.url)
    try:
        await client.jetstream().delete_stream(settings.stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


def delete_stream(settings: JetStreamSettings) -> None:
    asyncio.run(_delete(settings))
