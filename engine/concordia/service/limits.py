"""A request body size limit, enforced before anything parses the body.

Pure ASGI middleware: a request whose ``Content-Length`` is over the limit is answered
413 without reading a byte of it; one sent in chunks is read up to the limit and refused
the moment it passes it. Only a body within the limit reaches the application, replayed
from memory, so no route ever parses an oversized request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordia.service.problems import Problem, send_problem

DEFAULT_MAX_BODY = 1024 * 1024


class BodyLimit:
    """Refuse request bodies over ``max_body`` bytes with a 413 problem."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(send, Problem(400, "invalid-request",
                                        "the Content-Length header is not a number of bytes"),
                          scope)
            return
        if declared is not None and declared > self.max_body:
            await _refuse(send, Problem(
                413, "body-too-large", f"the request body is {declared} bytes; this server "
                f"takes at most {self.max_body}"), scope)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(send, Problem(
                    413, "body-too-large", f"the request body is over {self.max_body} bytes, "
                    "the most this server takes"), scope)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 19 else -1
    return None


async def _refuse(send: Send, problem: Problem, scope: Scope) -> None:
    # The client may still be sending: close the connection after the answer so that
    # the rest of the body is never read.
    await send_problem(send, problem, scope["path"], close=True)
