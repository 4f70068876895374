"""A bound on the request body of chosen REST routes, enforced before the app reads it.

FastAPI reads a whole JSON body into memory before validation can refuse it, so a
size check in a model or an endpoint comes too late: the bytes are already held.
:class:`BodyLimitMiddleware` sits in front of the routes it is given and

- answers ``413`` at once when ``Content-Length`` is over the limit, without
  reading any of the body;
- otherwise reads the body itself, counting, and answers ``413`` as soon as the
  count passes the limit (chunked uploads have no ``Content-Length``), so it
  never holds more than the limit plus one transport chunk;
- hands a body within the limit to the app unchanged, as one ``http.request``.

What it does not read of a refused body, uvicorn discards without buffering it.
The 413 is JSON: ``{"error": "request_too_large", "detail": ..., "max_bytes": N}``.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` on ``paths`` with HTTP 413.

    ``paths`` are exact request paths; every other request (WebSocket, static
    files, other routes) passes through untouched. ``max_bytes=None`` turns the
    limit off.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int | None, paths: Iterable[str]) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 (or None), not {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.max_bytes is None or scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before finishing its body
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            {
                "error": "request_too_large",
                "detail": f"request body over the limit of {self.max_bytes} bytes",
                "max_bytes": self.max_bytes,
            }
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    """The declared body size, or None (chunked, absent, or not a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects it; the streamed count still bounds us
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then the client's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # http.disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
