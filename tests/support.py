"""Shared test helpers: a real uvicorn server on 127.0.0.1 and a time unit.

Timeouts are multiples of ``UNIT`` seconds; set ``WS_TEST_TIMEOUT_UNIT`` to scale
them on a slow machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

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


async def refused_status(url: str, **options: Any) -> int:
    """Open a handshake that must be refused; return the HTTP status."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5 * UNIT, **options):
            pass
    status: int = refused.value.response.status_code
    return status


@dataclass
class StallRun:
    """The sockets and what each reading client received (by message number)."""

    stalled: ClientConnection
    fast: list[ClientConnection]
    received: dict[int, list[int]]


async def stalled_fan_out(
    url: str,
    *,
    broadcast: Callable[[int, str], Awaitable[Any]],
    number: Callable[[dict[str, Any]], int],
    ready: Callable[[ClientConnection], Awaitable[Any]] = receive_json,
    count: int = 3000,
    size: int = 20_000,
) -> StallRun:
    """One client stops reading while three read ``count`` broadcasts of ``size`` bytes.

    Enough to overflow the loopback socket buffers (tcp_rmem max is 32 MiB here), so
    the stalled client's buffer on the server must fill up. ``broadcast(i, pad)``
    sends message ``i``; ``number(message)`` reads ``i`` back; ``ready`` waits for a
    client's first frame. The producer is paced so the readers keep up and only the
    stalled client falls behind. The caller asserts on the result and closes sockets.
    """
    stalled = await connect(url, max_queue=1, compression=None)
    fast = [await connect(url, compression=None) for _ in range(3)]
    for ws in [stalled, *fast]:
        await ready(ws)
    received: dict[int, list[int]] = {i: [] for i in range(len(fast))}

    async def reader(index: int, ws: ClientConnection) -> None:
        while len(received[index]) < count:
            received[index].append(number(await receive_json(ws, 10)))

    async def produce() -> None:
        pad = "x" * size
        for i in range(count):
            await broadcast(i, pad)
            while min(len(got) for got in received.values()) < i - 100:
                await asyncio.sleep(0.001)

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(fast)]
    try:
        await asyncio.wait_for(produce(), 30 * UNIT)
        await asyncio.wait_for(asyncio.gather(*readers), 30 * UNIT)
    finally:
        for task in readers:
            task.cancel()
    return StallRun(stalled, fast, received)


__all__ = [
    "UNIT",
    "StallRun",
    "connect",
    "free_port",
    "receive_json",
    "receive_until",
    "refused_status",
    "running_server",
    "send_json",
    "stalled_fan_out",
]
