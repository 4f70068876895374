"""SendLimits.max_transport_bytes: what the server's transport buffers is capped too.

uvicorn answers every ping with a pong written straight into its transport,
whether or not the client reads, so a client that floods pings and never reads
grows the server without end, below the service's own bounded queue (issue 13).
The service checks each transport's write buffer every
``transport_check_interval`` and resets a connection over the cap.

The first group is pure (fake transports, no sockets). The last runs a real
uvicorn with ``DirectSendMiddleware``, a raw TCP client with a 4 KiB receive
buffer that floods masked pings and never reads, and a reading ``websockets``
client beside it; it is marked ``integration``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

from service import MessageType, SendLimits, WebSocketMessage, WebSocketService
from service.asgi import lifespan, serve
from service.directsend import (
    SCOPE_KEY,
    SERVER_KEY,
    DirectSendMiddleware,
    abort_connection,
    enable_direct_send,
    transport_probe,
)
from service.testing import MockWebSocket
from tests.service.test_close_abort import TCP_CLOSE, stalled_client, tcp_state
from tests.support import UNIT, connect, receive_json, receive_until, running_server

# -- the check, with fake transports ---------------------------------------------


class BufferedSocket(MockWebSocket):
    """A socket double whose server transport holds ``buffered`` bytes unsent."""

    def __init__(self, buffered: int = 0) -> None:
        super().__init__()
        self.buffered = buffered
        self.aborted = 0

    def write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> bool:
        self.aborted += 1
        return True


async def test_a_connection_over_the_cap_is_aborted_removed_and_counted() -> None:
    service = WebSocketService(
        heartbeat_interval=None, send_limits=SendLimits(max_transport_bytes=1000)
    )
    flooder, healthy, plain = BufferedSocket(1001), BufferedSocket(1000), MockWebSocket()
    flooder_id = await service.connect(flooder)
    healthy_id = await service.connect(healthy)
    plain_id = await service.connect(plain)  # reports no buffer: never checked
    await service.subscribe(flooder_id, "training")

    assert service.check_transports() == [flooder_id]
    assert flooder.aborted == 1 and flooder.closed is None  # reset, no close frame
    assert not service.is_connected(flooder_id)
    assert service.is_connected(healthy_id) and service.is_connected(plain_id)
    assert healthy.aborted == 0
    assert service.stats()["closed_transport_overflow"] == 1
    assert service.stats()["subscriptions"] == 0
    assert service.check_transports() == []  # counted once
    assert service.stats()["closed_transport_overflow"] == 1
    await service.stop()


async def test_no_cap_means_no_check() -> None:
    service = WebSocketService(
        heartbeat_interval=None, send_limits=SendLimits(max_transport_bytes=None)
    )
    socket_ = BufferedSocket(10**9)
    connection_id = await service.connect(socket_)
    assert service.check_transports() == []
    assert service.is_connected(connection_id) and socket_.aborted == 0
    await service.start()
    assert service._transport_task is None
    await service.stop()


async def test_start_runs_the_check_every_interval_without_heartbeats() -> None:
    service = WebSocketService(
        heartbeat_interval=None,
        send_limits=SendLimits(max_transport_bytes=1000, transport_check_interval=0.01),
    )
    await service.start()
    try:
        socket_ = BufferedSocket()
        connection_id = await service.connect(socket_)
        await asyncio.sleep(0.05)
        assert service.is_connected(connection_id)
        socket_.buffered = 5000
        for _ in range(int(200 * UNIT)):
            if not service.is_connected(connection_id):
                break
            await asyncio.sleep(0.01)
        assert not service.is_connected(connection_id) and socket_.aborted == 1
    finally:
        await service.stop()
    assert service._transport_task is None


@pytest.mark.parametrize(
    "limits",
    [{"max_transport_bytes": 0}, {"max_transport_bytes": -1}, {"transport_check_interval": 0}],
)
def test_send_limits_refuse_a_cap_that_is_not_positive(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SendLimits(**limits)


def test_the_default_cap_is_a_few_mib() -> None:
    assert SendLimits().max_transport_bytes == 8 * 1024 * 1024
    assert SendLimits().transport_check_interval == 0.25


class FakeServerTransport:
    def __init__(self) -> None:
        self.buffer = bytearray(1234)
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def get_extra_info(self, name: str) -> Any:
        return None

    def abort(self) -> None:
        self.aborted = True


class OtherUvicornProtocol:
    """Stands for uvicorn's ``wsproto`` or legacy ``websockets`` protocol."""

    def __init__(self) -> None:
        self.transport = FakeServerTransport()

    async def send(self, message: Any) -> None:
        return None


OtherUvicornProtocol.__module__ = "uvicorn.protocols.websockets.wsproto_impl"


def _scope() -> dict[str, Any]:
    return {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": []}


def test_another_uvicorn_implementation_gets_the_transport_but_no_fast_path() -> None:
    protocol = OtherUvicornProtocol()
    scope = _scope()
    enable_direct_send(scope, protocol.send)
    assert scope[SERVER_KEY] is protocol and SCOPE_KEY not in scope
    probe = transport_probe(scope)
    assert probe is not None and probe() == 1234
    assert abort_connection(scope) and protocol.transport.aborted


def test_no_transport_is_found_outside_uvicorn() -> None:
    scope = _scope()
    enable_direct_send(scope, MockWebSocket().send_text)  # a bound method, not uvicorn's
    assert SERVER_KEY not in scope and transport_probe(scope) is None
    assert not abort_connection(scope)


# -- a real uvicorn and a client that floods pings and never reads ----------------

PING_PAYLOAD = 125  # the largest control frame: each pong is 127 bytes
PING_BATCH = 100
MAX_PINGS = 60_000  # 7.6 MB of pongs at most, a few MB past the kernel's buffers


def ping_frames(count: int) -> bytes:
    """``count`` masked client ping frames (a server rejects unmasked ones)."""
    frames = []
    for _ in range(count):
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"p" * PING_PAYLOAD))
        frames.append(bytes((0x89, 0x80 | PING_PAYLOAD)) + mask + payload)
    return b"".join(frames)


@dataclass
class Flood:
    pings: int = 0
    error: str | None = None
    seconds: float = 0.0


def flood(sock: socket.socket, limit: float) -> Flood:
    """Send at most ``MAX_PINGS`` pings for at most ``limit`` seconds, never reading."""
    batch = ping_frames(PING_BATCH)
    result = Flood()
    start = time.monotonic()
    sock.settimeout(0.5 * UNIT)
    while result.pings < MAX_PINGS and time.monotonic() - start < limit:
        try:
            sock.sendall(batch)
        except OSError as exc:  # a reset (or, if the server stopped reading, a timeout)
            result.error = type(exc).__name__
            break
        result.pings += PING_BATCH
    result.seconds = time.monotonic() - start
    return result


def make_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))
    app.add_middleware(DirectSendMiddleware)

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket, topics=["training"])

    @app.websocket("/quiet")  # no broadcasts: only pongs can fill this client's buffer
    async def quiet(websocket: WebSocket) -> None:
        await serve(service, websocket)

    return app


@dataclass
class Reader:
    got: list[int] = field(default_factory=list)


async def read_progress(ws: Any, reader: Reader) -> None:
    while True:
        message = await receive_until(ws, MessageType.TRAINING_PROGRESS.value, 10)
        reader.got.append(message["data"]["i"])


async def wait_for(condition: Any, seconds: float) -> bool:
    for _ in range(int(seconds * UNIT / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


#: What uvicorn's deprecated ``--ws websockets`` implementation warns, and only that.
LEGACY_WARNINGS = [
    pytest.mark.filterwarnings(warning)
    for warning in (
        "ignore::uvicorn.config.UvicornDeprecationWarning",
        "ignore:websockets.legacy is deprecated:DeprecationWarning",
        "ignore:remove second argument of ws_handler:DeprecationWarning",
    )
]


DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("ws", "cap", "headers"),
    [
        # uvicorn's default: pongs pile up in the transport without end.
        pytest.param("websockets-sansio", 512 * 1024, "", id="websockets-sansio"),
        # The same with compression negotiated (the flooder's frames go compressed).
        pytest.param("websockets-sansio", 512 * 1024, DEFLATE, id="websockets-sansio-deflate"),
        # The legacy implementation stops reading at its 64 KiB high-water mark, so
        # the flood cannot pass that; a cap below it shows the check reaches it too.
        pytest.param("websockets", 16 * 1024, "", id="websockets", marks=LEGACY_WARNINGS),
    ],
)
async def test_a_ping_flooder_that_never_reads_is_reset_and_others_keep_receiving(
    ws: str, cap: int, headers: str
) -> None:
    service = WebSocketService(
        heartbeat_interval=None, send_limits=SendLimits(max_transport_bytes=cap)
    )
    async with running_server(make_app(service), ws=ws) as url:
        port = int(url.rsplit(":", 1)[1])
        reader_ws = await connect(f"{url}/ws", compression=None, open_timeout=5 * UNIT)
        sock = await asyncio.to_thread(stalled_client, port, "/quiet", headers)
        try:
            await receive_json(reader_ws)  # connection_established
            for _ in range(int(200 * UNIT)):
                if service.stats()["connections"] == 2 and service.stats()["subscriptions"] == 1:
                    break
                await asyncio.sleep(0.01)
            assert service.stats()["connections"] == 2
            (flooder,) = [c for c in service.connections.values() if c.metadata["path"] == "/quiet"]
            protocol = flooder.transport._websocket.scope.get(SCOPE_KEY)  # type: ignore[attr-defined]
            if headers == DEFLATE:  # negotiated: its frames are the shared compressed ones
                assert protocol is not None and protocol.conn.extensions
            reader = Reader()
            reading = asyncio.create_task(read_progress(reader_ws, reader))
            flooding = asyncio.ensure_future(asyncio.to_thread(flood, sock, 10 * UNIT))
            sent = 0

            async def broadcast() -> None:
                nonlocal sent
                await service.broadcast(
                    WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": sent}),
                    topic="training",
                )
                sent += 1

            try:
                async with asyncio.timeout(15 * UNIT):
                    while not flooding.done():  # broadcasts go on throughout the flood
                        await broadcast()
                        await asyncio.sleep(0.005)
                    result = await flooding
                # The pings sit in the server's receive buffer until it parses them:
                # the end of the flood is not the end of the pongs.
                aborted = await wait_for(
                    lambda: service.stats()["closed_transport_overflow"] == 1, 10
                )
                assert aborted, (result, service.stats())
                # A reset (linger 0), not a close handshake the client never reads.
                assert await wait_for(lambda: tcp_state(sock) == TCP_CLOSE, 2), result
                assert service.stats()["connections"] == 1

                for _ in range(10):  # the reading client still gets every broadcast
                    await broadcast()
                assert await wait_for(lambda: len(reader.got) >= sent, 5), (sent, reader.got)
                assert reader.got == list(range(sent))
                assert service.stats()["closed_slow"] == 0
            finally:
                reading.cancel()
        finally:
            sock.close()
            await reader_ws.close()
