"""Shared test helpers: a real uvicorn server on 127.0.0.1 and a time unit.

Timeouts are multiples of ``UNIT`` seconds; set ``WS_TEST_TIMEOUT_UNIT`` to scale
them on a slow machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

UNIT = float(os.environ.get("WS_TEST_TIMEOUT_UNIT", "1.0"))


@contextlib.asynccontextmanager
async def running_server(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop; yield its ``ws://`` base URL."""
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **config))
    task = asyncio.create_task(server.serve())
    for _ in range(int(500 * UNIT)):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10 * UNIT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def receive_json(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    """Next frame from ``ws`` parsed as JSON, within ``timeout`` units."""
    raw = await asyncio.wait_for(ws.recv(), timeout * UNIT)
    value: dict[str, Any] = orjson.loads(raw)
    return value


async def receive_until(
    ws: ClientConnection, type_name: str, timeout: float = 2.0
) -> dict[str, Any]:
    """Skip frames until one of ``type_name`` arrives (heartbeats, acks...)."""
    async with asyncio.timeout(timeout * UNIT):
        while True:
            message = await receive_json(ws, timeout)
            if message.get("type") == type_name:
                return message


async def send_json(ws: ClientConnection, value: Any) -> None:
    await ws.send(orjson.dumps(value).decode())


__all__ = [
    "UNIT",
    "connect",
    "free_port",
    "receive_json",
    "receive_until",
    "running_server",
    "send_json",
]
