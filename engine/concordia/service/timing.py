"""``Server-Timing: app;dur=<ms>`` on every answer: the time the server spent on a request,
from its first byte to its answer, so clients (and the benchmark) can tell the server's
latency from their own queueing."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTiming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - began) * 1000:.2f}".encode()
                headers = [*message.get("headers", ()), (b"server-timing", took)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)
