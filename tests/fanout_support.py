"""A real fan-out server for strict-client tests: the service's three endpoint shapes.

``/ws`` is :func:`service.asgi.serve`, ``/guide`` is the migration guide's own
route (``connect``, ``subscribe``, a ``receive_text()`` loop calling
``handle_message``), ``/lean`` is :class:`service.asgi.ServiceEndpoint`; the app has
``DirectSendMiddleware`` and runs on uvicorn's defaults (permessage-deflate
accepted), so every shape may take the direct path. Every subscriber gets topic
``t``.

Broadcast ``i`` (:func:`event`) carries a padding of one of four kinds, in turn:
compressible (its compressed frame fits a 7-bit length), incompressible text of
about 3,000 characters (16-bit length) and about 100,000 characters with 1- to
4-byte UTF-8 characters (64-bit length even compressed), and repetitive
multibyte text. A client (Python, Node, a browser page) checks each message's
padding against the SHA-256 of its kind (:data:`SHAS`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from service import MessageType, WebSocketMessage, WebSocketService
from service.asgi import DirectSendMiddleware, ServiceEndpoint, lifespan, serve
from service.transport import AsgiTransport

TOPIC = "t"
TIMESTAMP = "2026-01-01T00:00:00+00:00"
ENDPOINTS = ("/ws", "/guide", "/lean")


def _incompressible(chars: int, seed: int) -> str:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789éüß€✓😀🚀中文"
    return "".join(rng.choice(alphabet) for _ in range(chars))


#: The paddings, one per length class of the compressed frame (see the module doc).
PADS: tuple[str, ...] = (
    "progress " * 8,
    _incompressible(3_000, 1),
    _incompressible(100_000, 2),
    "é€😀✓中文 loss=0.25 " * 1_500,
)
#: The SHA-256 (hex) of each padding's UTF-8 bytes: what a client that does not
#: know the paddings (a Node or browser client) checks each message against.
SHAS: tuple[str, ...] = tuple(hashlib.sha256(pad.encode()).hexdigest() for pad in PADS)


def event(n: int) -> WebSocketMessage:
    """Broadcast number ``n``: its kind (``n % 4``) and that kind's padding."""
    kind = n % len(PADS)
    return WebSocketMessage(
        type=MessageType.CUSTOM,
        data={"n": n, "kind": kind, "pad": PADS[kind]},
        timestamp=TIMESTAMP,
    )


def check_event(message: dict[str, Any]) -> int:
    """The number of a received broadcast whose padding hashes as its kind's (else raise)."""
    data = message["data"]
    digest = hashlib.sha256(data["pad"].encode()).hexdigest()
    assert digest == SHAS[data["kind"]], f"corrupt padding in broadcast {data['n']}"
    number: int = data["n"]
    return number


def fanout_app(service: WebSocketService, *, page: str = "") -> Any:
    """The three endpoint shapes on one uvicorn app (``page`` is served at ``/page``)."""
    app = FastAPI(lifespan=lifespan(service))
    app.add_middleware(DirectSendMiddleware)

    @app.websocket("/ws")
    async def served(websocket: WebSocket) -> None:
        await serve(service, websocket, topics=[TOPIC])

    @app.websocket("/guide")
    async def guide(websocket: WebSocket) -> None:
        # The migration guide's endpoint, as written there.
        connection_id = await service.connect(websocket, {"endpoint": "main"})
        await service.subscribe(connection_id, TOPIC)
        try:
            while True:
                data = await websocket.receive_text()
                await service.handle_message(connection_id, data)
        except WebSocketDisconnect:
            await service.disconnect(connection_id)

    @app.get("/page")
    async def html() -> HTMLResponse:
        return HTMLResponse(page)

    return ServiceEndpoint(app, service=service, path="/lean", topics=[TOPIC])


def direct(service: WebSocketService, connection_id: str) -> bool:
    """Whether the connection's sends may take the pre-framed fast path."""
    transport = service.connection(connection_id).transport
    return isinstance(transport, AsgiTransport) and transport.write_now is not None


def count_fallback_sends(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """``websocket.send`` events that reached uvicorn, by the client's port, from now on.

    A frame written on the fast path never becomes an ASGI event, so a count of
    zero means every frame of that client went out directly.
    """
    counts: dict[int, int] = {}
    original: Callable[..., Any] = WebSocketsSansIOProtocol.send

    async def counting(self: WebSocketsSansIOProtocol, message: Any) -> None:
        if message["type"] == "websocket.send":
            assert self.client is not None
            counts[self.client[1]] = counts.get(self.client[1], 0) + 1
        await original(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send", counting)
    return counts


def server_extensions(service: WebSocketService, connection_id: str) -> list[Any]:
    """The extensions uvicorn's protocol negotiated for a direct connection."""
    transport = service.connection(connection_id).transport
    assert isinstance(transport, AsgiTransport)
    protocol = transport._websocket.scope["service.direct_send"]
    extensions: list[Any] = protocol.conn.extensions
    return extensions


__all__ = [
    "ENDPOINTS",
    "PADS",
    "SHAS",
    "TOPIC",
    "check_event",
    "count_fallback_sends",
    "direct",
    "event",
    "fanout_app",
    "server_extensions",
]
