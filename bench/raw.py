"""The reference: a plain ``websockets`` server broadcasting with ``websockets.broadcast``.

No ASGI, no framework: the fastest broadcast Python's websockets library offers
(encode once, frame and write per connection, no backpressure). It speaks the same
control channel as the ASGI variants, on its own WebSocket path.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from .protocol import BENCH_PATH, CONTROL_PATH, legacy_payload
from .servers import Control, is_stall_request

__all__ = ["run"]


class _Socket:
    """Gives a websockets connection the ``send_text`` the fill op uses."""

    __slots__ = ("__weakref__", "connection")  # weak: Control.stallable is a WeakSet

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection

    def send_text(self, data: str) -> Awaitable[None]:
        return self.connection.send(data)


async def run(port: int, *, profile: str | None = None) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT.

    With ``profile``, bursts are profiled into that file (see :class:`Control`).
    """
    subscribers: set[ServerConnection] = set()

    async def broadcast_one(burst_id: int, n: int, pad: str) -> None:
        broadcast(subscribers, orjson.dumps(legacy_payload(burst_id, n, pad)), text=True)

    control = Control(broadcast_one, lambda: len(subscribers), profile=profile)

    async def handler(connection: ServerConnection) -> None:
        path, _, query = connection.request.path.partition("?") if connection.request else ("",) * 3
        if path == CONTROL_PATH:
            async for request in connection:
                reply = await control.handle(orjson.loads(request))
                await connection.send(orjson.dumps(reply).decode())
            return
        if path != BENCH_PATH:
            await connection.close(1008, "unknown path")
            return
        stall = _Socket(connection) if is_stall_request(query.encode()) else None
        subscribers.add(connection)
        if stall is not None:
            control.stallable.add(stall)
        try:
            await connection.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            subscribers.discard(connection)
            if stall is not None:
                control.stallable.discard(stall)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port):
        await stop.wait()
