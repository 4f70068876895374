"""A client closed for overflow that cannot even take the close frame is dropped.

A raw TCP client with a 4 KiB receive buffer completes the handshake by hand and
then never reads. The service closes it 1013 when its send buffer overflows; the
close frame cannot get through, so after ``close_timeout`` the server aborts the
TCP connection (a reset), instead of leaving it half-open until a keepalive.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import pytest
from fastapi import FastAPI, WebSocket

from service import MessageType, SendLimits, WebSocketMessage, WebSocketService
from service.asgi import lifespan, serve
from service.directsend import DirectSendMiddleware
from tests.support import UNIT, running_server

pytestmark = pytest.mark.integration

CLOSE_TIMEOUT = 0.5
TCP_CLOSE = 7  # tcpi_state in Linux's struct tcp_info


def make_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))
    app.add_middleware(DirectSendMiddleware)

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket, topics=["training"])

    return app


def stalled_client(port: int, path: str = "/ws", headers: str = "") -> socket.socket:
    """Handshake by hand on a socket with a tiny receive buffer, then never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response and len(response) < 4096:
        chunk = sock.recv(1)
        assert chunk, "server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


async def test_an_overflowing_client_that_never_reads_is_reset_after_close_timeout() -> None:
    service = WebSocketService(
        heartbeat_interval=None,
        close_timeout=CLOSE_TIMEOUT,
        send_limits=SendLimits(max_messages=10_000, max_bytes=300_000),
    )
    async with running_server(make_app(service)) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = await asyncio.to_thread(stalled_client, port)
        try:
            for _ in range(int(200 * UNIT)):
                if service.stats()["connections"] == 1:
                    break
                await asyncio.sleep(0.01)
            pad = "x" * 20_000
            for i in range(2_000):  # 40 MB at most; overflow comes far sooner
                if service.stats()["closed_slow"]:
                    break
                await service.broadcast(
                    WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": i, "p": pad}),
                    topic="training",
                )
                await asyncio.sleep(0)
            assert service.stats()["closed_slow"] == 1
            assert tcp_state(sock) != TCP_CLOSE  # the close frame is still stuck

            for _ in range(int((CLOSE_TIMEOUT + 3) * UNIT / 0.05)):
                if tcp_state(sock) == TCP_CLOSE:
                    break
                await asyncio.sleep(0.05)
            assert tcp_state(sock) == TCP_CLOSE, "the server never dropped the stalled client"
            assert service.stats()["connections"] == 0
        finally:
            sock.close()
