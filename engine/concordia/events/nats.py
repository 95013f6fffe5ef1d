"""NATS JetStream as the bus between services: a publisher for the outbox relay, and a
durable consumer that hands inbound events to the engine.

Each event is published on the subject ``<prefix>.<event type>`` (for instance
``concordia.events.payment.settled``) with the event's id as ``Nats-Msg-Id``, so
JetStream drops a second copy of the same event within the stream's duplicate window
(a relay that crashed between publishing and marking the event published sends it
again; the copy is dropped, and any copy that still reaches a consumer is dropped by the
engine's inbox, which knows every event by source and id). A publish returns only
once JetStream has acknowledged the message as stored; the relay marks an event
published only then.

The consumer is a durable pull consumer with explicit acknowledgement, shared by every
worker that names it: each message goes to one of them. A batch is acknowledged only
after the engine has committed its delivery (the inbox entry and its effects), so a
worker that dies mid-batch leaves the messages to be redelivered to another, and the
inbox makes the redelivery harmless.

The connection reconnects by itself, for ever; a publish while it is down raises (the
relay tries again later), a fetch while it is down waits and tries again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from concordia.errors import ConcordiaError

__all__ = ["BusError", "JetStreamSettings", "NatsBus", "NatsConsumer", "subject_for"]

T = TypeVar("T")
# How long the consumer waits before asking again for events whose delivery failed.
RETRY_PAUSE = 1.0
_log = structlog.get_logger("concordia.nats")
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class BusError(ConcordiaError):
    """The bus refused or could not take an event; the message names the server."""


@dataclass(frozen=True, slots=True)
class JetStreamSettings:
    """Where events go: the server, the stream and its subjects' prefix.

    ``duplicate_window`` is how long JetStream remembers message ids to drop copies
    (seconds); a relay that crashed resends within it.
    """

    url: str = "nats://127.0.0.1:4222"
    stream: str = "CONCORDIA"
    prefix: str = "concordia.events"
    duplicate_window: float = 600.0
    timeout: float = 5.0

    @property
    def subjects(self) -> str:
        return f"{self.prefix}.>"

    def subject(self, event_type: str) -> str:
        """The subject an event of ``event_type`` is published on."""
        return subject_for(self.prefix, event_type)


def subject_for(prefix: str, event_type: str) -> str:
    """The subject an event of ``event_type`` is published on."""
    return f"{prefix}.{event_type}"


async def connect(settings: JetStreamSettings) -> tuple[Client, JetStreamContext]:
    """A connection that reconnects for ever, and the stream made sure of."""

    async def on_error(exc: Exception) -> None:
        _log.warning("nats.error", error=str(exc) or type(exc).__name__)

    try:
        client = await nats.connect(settings.url, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.5, connect_timeout=settings.timeout,
                                    error_cb=on_error, allow_reconnect=True)
    except Exception as exc:
        raise BusError(f"cannot reach NATS at {settings.url}: {exc or type(exc).__name__}"
                       ) from None
    js = client.jetstream(timeout=settings.timeout)
    await ensure_stream(js, settings)
    return client, js


async def ensure_stream(js: JetStreamContext, settings: JetStreamSettings) -> None:
    config = StreamConfig(name=settings.stream, subjects=[settings.subjects],
                          storage=StorageType.FILE,
                          duplicate_window=settings.duplicate_window)
    try:
        await js.stream_info(settings.stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:  # another process made it meanwhile
            await js.stream_info(settings.stream)


class NatsBus:
    """A :class:`~concordia.events.bus.Bus` on JetStream (see the module docstring).

    The async engine calls :meth:`publish_async` on its own loop; the sync engine calls
    :meth:`publish`, which runs on a loop of the bus's own in a background thread.
    """

    def __init__(self, settings: JetStreamSettings | str | None = None) -> None:
        if isinstance(settings, str):
            settings = JetStreamSettings(url=settings)
        self.settings = settings or JetStreamSettings()
        # One connection per event loop (a connection belongs to the loop it was made on);
        # a loop that is gone takes its entry with it.
        self._conns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               tuple[Client, JetStreamContext]] = (
            weakref.WeakKeyDictionary())
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    async def _js(self) -> JetStreamContext:
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is None or conn[0].is_closed:
            conn = await connect(self.settings)
            self._conns[loop] = conn
        return conn[1]

    async def publish_async(self, envelope: dict[str, Any]) -> None:
        """Publish one event and wait for JetStream's acknowledgement; raise BusError."""
        subject = subject_for(self.settings.prefix, envelope["type"])
        try:
            js = await self._js()
            await js.publish(subject, _encode(envelope).encode(),
                             headers={"Nats-Msg-Id": envelope["id"]},
                             stream=self.settings.stream)
        except BusError:
            raise
        except Exception as exc:
            raise BusError(f"NATS {self.settings.url}: publishing {envelope['id']} on "
                           f"{subject} failed: {exc or type(exc).__name__}") from None

    def publish(self, envelope: dict[str, Any]) -> None:
        """Publish from synchronous code (the sync engine's relay)."""
        self._run(self.publish_async(envelope))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._start:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                                name="concordia-nats")
                self._thread.start()
                self._thread_loop = loop
        future = asyncio.run_coroutine_threadsafe(coro, self._thread_loop)
        return future.result(self.settings.timeout * 4)

    async def aclose(self) -> None:
        """Close the connection of the running loop (drain what is in flight)."""
        conn = self._conns.pop(asyncio.get_running_loop(), None)
        if conn is not None and not conn[0].is_closed:
            await conn[0].drain()

    def close(self) -> None:
        """Close the background loop's connection, if :meth:`publish` made one."""
        loop = self._thread_loop
        if loop is None:
            return
        conn = self._conns.pop(loop, None)
        if conn is not None and not conn[0].is_closed:
            asyncio.run_coroutine_threadsafe(conn[0].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._thread_loop = None


Deliver = Callable[[list[dict[str, Any]]], Awaitable[None]]


class NatsConsumer:
    """A durable pull consumer that hands batches of events to ``deliver`` and acks them
    once it returns (see the module docstring)."""

    def __init__(self, settings: JetStreamSettings | str | None = None, *,
                 durable: str = "concordia", filter_subject: str | None = None,
                 batch: int = 64, ack_wait: float = 30.0, only_new: bool = False,
                 inactive_threshold: float | None = None) -> None:
        if isinstance(settings, str):
            settings = JetStreamSettings(url=settings)
        self.settings = settings or JetStreamSettings()
        self.durable = durable
        self.filter_subject = filter_subject or self.settings.subjects
        self.batch = batch
        self.ack_wait = ack_wait
        # A new consumer starts at the stream's first message, or (``only_new``) at the
        # next one; one idle for ``inactive_threshold`` seconds is removed by the server.
        self.only_new = only_new
        self.inactive_threshold = inactive_threshold
        self.delivered = 0  # messages acknowledged (for tests and benchmarks)
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def subscribe(self) -> None:
        """Create the durable consumer now (so that ``only_new`` counts from here)."""
        client, js = await connect(self.settings)
        try:
            await self._subscribe(js)
        finally:
            await client.close()

    async def run(self, deliver: Deliver, *, refuse: Callable[[dict[str, Any] | None,
                                                               Exception], bool] | None = None,
                  stop_when: Callable[[], bool] | None = None) -> None:
        """Fetch, deliver, ack, until :meth:`stop` (or ``stop_when()``); a server that is
        down (at start, or for good after a restart) is waited for.

        A message that is not a JSON object, or that ``refuse(event, error)`` says will
        never be taken (an event the taxonomy rejects), is terminated (never redelivered)
        and logged; one whose delivery failed otherwise (the store unreachable) is
        negatively acknowledged and comes back after a pause.
        """
        stopping = stop_when or (lambda: False)
        while not (self._stopping or stopping()):
            try:
                client, js = await connect(self.settings)
            except BusError as exc:  # not up yet, or gone for now: try again
                _log.warning("nats.connect_failed", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            try:
                await self._consume(js, deliver, refuse, stopping)
            except Exception as exc:  # e.g. JetStream not ready after a restart
                _log.warning("nats.consumer_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                if not client.is_closed:
                    await client.close()

    async def _consume(self, js: JetStreamContext, deliver: Deliver,
                       refuse: Callable[[dict[str, Any] | None, Exception], bool] | None,
                       stopping: Callable[[], bool]) -> None:
        sub = await self._subscribe(js)
        while not (self._stopping or stopping()):
            try:
                msgs = await sub.fetch(self.batch, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.NoServersError,
                    nats.js.errors.APIError, OSError) as exc:
                _log.warning("nats.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            await self._handle(msgs, deliver, refuse)

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=(DeliverPolicy.NEW if self.only_new
                                                else DeliverPolicy.ALL),
                                ack_wait=self.ack_wait, filter_subject=self.filter_subject,
                                max_ack_pending=-1,
                                inactive_threshold=self.inactive_threshold)
        return await js.pull_subscribe(self.filter_subject, durable=self.durable,
                                       stream=self.settings.stream, config=config)

    async def _handle(self, msgs: list[Msg], deliver: Deliver,
                      refuse: Callable[[dict[str, Any] | None, Exception], bool] | None
                      ) -> None:
        events: list[tuple[Msg, dict[str, Any]]] = []
        for msg in msgs:
            try:
                event = json.loads(msg.data)
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                _log.error("nats.unreadable_message", subject=msg.subject, error=str(exc))
                await _settle(msg.term())
                continue
            events.append((msg, event))
        if not events:
            return
        try:
            await deliver([event for _, event in events])
        except Exception as exc:
            # One bad event fails the batch: take them one at a time to find it.
            retry = [msg for msg, event in events
                     if not await self._one(msg, event, deliver, refuse,
                                            exc if len(events) == 1 else None)]
            if retry:
                # The store is unreachable: pause, then ask for them again now. The pause
                # is the consumer's, not the server's: a NAK with a delay on a pull
                # consumer sometimes never came back before the ack wait on the NATS
                # server this project runs (2.9), while an immediate NAK always did.
                await asyncio.sleep(RETRY_PAUSE)
                for msg in retry:
                    await _settle(msg.nak())
            return
        for msg, _ in events:
            await _settle(msg.ack())
        self.delivered += len(events)

    async def _one(self, msg: Msg, event: dict[str, Any], deliver: Deliver,
                   refuse: Callable[[dict[str, Any] | None, Exception], bool] | None,
                   error: Exception | None) -> bool:
        """Deliver one event; False when it should come back (its delivery failed)."""
        if error is None:
            try:
                await deliver([event])
            except Exception as exc:
                error = exc
            else:
                await _settle(msg.ack())
                self.delivered += 1
                return True
        if refuse is not None and refuse(event, error):
            _log.error("nats.event_refused", event_id=event.get("id"), error=str(error))
            await _settle(msg.term())
            return True
        _log.warning("nats.delivery_failed", event_id=event.get("id"), error=str(error))
        return False


async def _settle(ack: Awaitable[Any]) -> None:
    """Ack, nak or term a message; a broken connection only means it comes back later."""
    try:
        await ack
    except Exception as exc:
        _log.warning("nats.ack_failed", error=str(exc) or type(exc).__name__)
