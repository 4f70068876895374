"""Helpers for tests/shim/test_stage_guarantees.py: an old-style app behind the shim.

The app's endpoint is written the way legacy FastAPI backends wrote it (connect,
``receive_text`` loop, ``disconnect`` on ``WebSocketDisconnect``); only the
manager is the shim. The endpoint records what it received and how often its
disconnect cleanup ran, so tests can tell what reached the app's code.

Every wait here is bounded in iterations and seconds (multiples of ``UNIT``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from legacy import producers
from service import WebSocketService
from service.directsend import DirectSendMiddleware
from shim import CompatWebSocketManager, FixedStages, ProducerScope, Stage
from tests.support import UNIT, connect, running_server

__all__ = [
    "ENVELOPE",
    "EndpointLog",
    "ShimServer",
    "closed_code",
    "event_number",
    "eventually",
    "progress_event",
    "read_frames",
    "shim_server",
    "slow_reader",
]

ENVELOPE = [Subprotocol("envelope.v1")]


@dataclass
class EndpointLog:
    """What the app's endpoint code saw: frames returned by ``receive_text`` and cleanups."""

    received: list[str] = field(default_factory=list)
    cleanups: int = 0


def old_style_app(manager: CompatWebSocketManager, log: EndpointLog) -> FastAPI:
    """A legacy endpoint, verbatim but for the manager (and the direct-send middleware)."""
    app = FastAPI()
    app.add_middleware(DirectSendMiddleware)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await manager.connect(websocket)
        try:
            while True:
                data = await websocket.receive_text()
                log.received.append(data)
        except WebSocketDisconnect:
            manager.disconnect(websocket)
            log.cleanups += 1

    return app


@dataclass
class ShimServer:
    service: WebSocketService
    manager: CompatWebSocketManager
    stages: FixedStages
    log: EndpointLog
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws(self) -> str:
        return f"{self.url}/ws"

    async def flip(self, stage: Stage) -> None:
        """Route ``/ws`` to ``stage`` through the decider's listener; wait until applied."""
        self.stages.set("/ws", stage)
        applied = await eventually(
            lambda: all(route.stage is stage for route in self.manager.routes())
        )
        assert applied, f"the flip to {stage} was never applied"


@asynccontextmanager
async def shim_server(
    stage: Stage, *, producer_scope: ProducerScope | None = None, **service_options: Any
) -> AsyncIterator[ShimServer]:
    """The shim over the default legacy manager, every connection at ``stage``."""
    service_options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**service_options)
    stages = FixedStages(default=stage)
    manager = CompatWebSocketManager(service=service, decider=stages, producer_scope=producer_scope)
    log = EndpointLog()
    try:
        await service.start()  # its watchdogs (the transport cap) run as in an app
        async with running_server(old_style_app(manager, log)) as url:
            yield ShimServer(service, manager, stages, log, url)
    finally:
        await manager.stop()
        manager.close()
        await service.stop()  # closes its broker connections too


def progress_event(i: int, pad: str = "") -> dict[str, Any]:
    """Event ``i``: a legacy ``training_update`` payload (a default rule, topic training)."""
    return producers.training_update_payload(f"step-{i}", min(1.0, i / 1000), pad, "running")


def event_number(frame: dict[str, Any]) -> int:
    """``i`` of :func:`progress_event` ``i``, in the old shape or in the envelope."""
    body: dict[str, Any] = frame.get("data", frame)
    name: str = body["phase_name"]
    assert name.startswith("step-"), frame
    return int(name.removeprefix("step-"))


async def eventually(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` for at most ``timeout`` units; True as soon as it holds."""
    for _ in range(max(1, int(timeout * UNIT / interval))):
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def read_frames(
    ws: ClientConnection, count: int, *, timeout: float = 5.0, quiet: float = 0.3
) -> list[dict[str, Any]]:
    """Exactly ``count`` JSON frames, then nothing else for ``quiet`` units."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout * UNIT):
        while len(frames) < count:
            frames.append(orjson.loads(await ws.recv()))
    try:
        extra = await asyncio.wait_for(ws.recv(), quiet * UNIT)
    except TimeoutError:
        return frames
    raise AssertionError(f"a frame beyond the {count} expected: {str(extra)[:200]}")


async def closed_code(ws: ClientConnection, *, timeout: float = 5.0, limit: int = 1000) -> int:
    """Read (and drop) at most ``limit`` frames until the server closes; its close code."""
    async with asyncio.timeout(timeout * UNIT):
        for _ in range(limit):
            try:
                await ws.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                return closed.rcvd.code
    raise AssertionError(f"still open after {limit} frames")


async def slow_reader(url: str, port: int, **options: Any) -> ClientConnection:
    """A ``websockets`` client that holds at most one frame and a 4 KiB kernel buffer.

    Until the test calls ``recv()``, the client stops reading from its socket, so
    the server's socket buffers fill and further frames wait in the server's
    per-connection queue.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5 * UNIT
        )
        return await connect(url, sock=sock, max_queue=1, compression=None, **options)
    except BaseException:
        sock.close()
        raise
