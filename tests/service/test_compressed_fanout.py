"""Compressed fan-out on a real uvicorn with strict Python ``websockets`` clients.

With permessage-deflate negotiated (uvicorn's default, what browsers offer) each
broadcast is compressed once per negotiated parameters and the same frame is
written to every such connection (:mod:`service.frames`). These tests check what
the clients get, frame by frame: the RSV1 bit and the compressed length of every
data frame (a recorder on the client's own decoder), content verified by hash for
every length class, acks, pongs and protocol pings interleaved, a client that
stops reading and resumes (its frames then go through uvicorn's own encoder, in
order with the shared ones), ``stop()`` during a burst, and clients that negotiate
context takeover, no context takeover or a small window. The migration guide's
own endpoint (``/guide``) is on the direct path like ``serve()`` and
``ServiceEndpoint``. Node's ``ws`` and Chromium run the same checks in
``tests/clients``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode

from service import CloseCode, SendLimits, WebSocketService
from tests.fanout_support import (
    ENDPOINTS,
    check_event,
    count_fallback_sends,
    direct,
    event,
    fanout_app,
    server_extensions,
)
from tests.support import UNIT, connect, receive_json, receive_until, running_server, send_json

pytestmark = pytest.mark.integration

#: What a client offers, by name: websockets' default (context takeover allowed
#: both ways), no context takeover either way, and a 9-bit server window.
OFFERS: dict[str, Any] = {
    "default": "deflate",
    "no-context": [
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            compress_settings={"memLevel": 5},
        )
    ],
    "window-9": [
        ClientPerMessageDeflateFactory(server_max_window_bits=9, compress_settings={"memLevel": 5})
    ],
}


class FrameLog:
    """Every data frame a client's decoder sees: ``(rsv1, payload bytes on the wire)``."""

    def __init__(self, ws: ClientConnection) -> None:
        (extension,) = ws.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        self.frames: list[tuple[bool, int]] = []
        original = extension.decode

        def decode(frame: Frame, *, max_size: int | None = None) -> Frame:
            if frame.opcode is Opcode.TEXT:
                self.frames.append((frame.rsv1, len(frame.data)))
            return original(frame, max_size=max_size)

        extension.decode = decode  # type: ignore[method-assign]


@asynccontextmanager
async def fanout(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    async with running_server(fanout_app(service)) as url:
        yield service, url


async def ready(ws: ClientConnection) -> str:
    """Wait for ``connection_established`` and for the subscription (a pong after it)."""
    established = await receive_json(ws)
    assert established["type"] == "connection_established"
    await send_json(ws, {"type": "ping", "id": "ready"})
    await receive_until(ws, "pong")
    connection_id: str = established["data"]["connection_id"]
    return connection_id


async def numbers(ws: ClientConnection, count: int) -> list[int]:
    """The next ``count`` broadcasts' numbers, each checked against its hash."""
    return [check_event(await receive_json(ws, 10)) for _ in range(count)]


def port_of(ws: ClientConnection) -> int:
    port: int = ws.local_address[1]
    return port


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("offer", OFFERS)
async def test_every_length_class_arrives_compressed_once_for_all_and_intact(
    endpoint: str, offer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    async with fanout() as (service, url), AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(url + endpoint, compression=None))
            if i == 0
            else await stack.enter_async_context(
                connect(url + endpoint, **_compression(OFFERS[offer]))
            )
            for i in range(3)
        ]
        compressed = clients[1:]  # clients[0] offers no compression
        ids = [await ready(ws) for ws in clients]
        assert all(direct(service, cid) for cid in ids), "every shape takes the direct path"
        logs = [FrameLog(ws) for ws in compressed]
        for ws, cid in zip(compressed, ids[1:], strict=True):
            (negotiated,) = server_extensions(service, cid)
            assert negotiated.local_no_context_takeover, "the server keeps no context"
            assert ws.response is not None
            assert "server_no_context_takeover" in ws.response.headers["Sec-WebSocket-Extensions"]
        for n in range(8):
            await service.broadcast(event(n), topic="t")
        for ws in clients:
            assert await numbers(ws, 8) == list(range(8))
        for log in logs:
            assert all(rsv1 for rsv1, _ in log.frames), "every broadcast went compressed"
            sizes = [size for _, size in log.frames]
            assert min(sizes) <= 125 and any(126 <= s < 1 << 16 for s in sizes)
            assert max(sizes) >= 1 << 16
        # connection_established, the pong and 8 broadcasts: none through uvicorn's send
        assert [fallback.get(port_of(ws), 0) for ws in clients] == [0, 0, 0]


def _compression(offer: Any) -> dict[str, Any]:
    if offer == "deflate":
        return {}  # websockets' default offer
    return {"compression": None, "extensions": offer}


async def test_acks_pongs_and_protocol_pings_interleave_with_compressed_broadcasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps sending (compressed, with its own context) while a burst
    arrives: its replies and the server's pongs slot in between whole frames."""
    fallback = count_fallback_sends(monkeypatch)
    async with fanout() as (service, url), connect(f"{url}/guide") as ws:
        await ready(ws)
        count = 120

        async def chatter() -> None:
            for i in range(30):
                await send_json(ws, {"type": "ping", "id": f"p{i}"})
                await send_json(
                    ws, {"type": "subscribe", "data": {"topic": f"x{i}"}, "id": f"s{i}"}
                )
                pong = await ws.ping(b"keepalive %d" % i)
                await asyncio.wait_for(pong, 5 * UNIT)
                await asyncio.sleep(0.002)

        async def produce() -> None:
            for n in range(count):
                await service.broadcast(event(n), topic="t")
                await asyncio.sleep(0)

        got: list[int] = []
        replies: list[str] = []

        async def read() -> None:
            while len(got) < count or len(replies) < 60:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 10 * UNIT))
                if message["type"] == "custom":
                    got.append(check_event(message))
                else:
                    replies.append(message["id"])

        await asyncio.wait_for(asyncio.gather(chatter(), produce(), read()), 30 * UNIT)
        assert got == list(range(count))
        assert sorted(replies) == sorted(
            [f"p{i}" for i in range(30)] + [f"s{i}" for i in range(30)]
        )
        assert fallback.get(port_of(ws), 0) == 0


async def _paused_client(url: str) -> ClientConnection:
    """A compressed client with a 4 KiB kernel buffer that holds at most one message:
    until it calls ``recv()`` the server's socket buffers fill."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await connect(url, sock=sock, max_queue=1, max_size=None)


async def test_a_client_that_pauses_and_resumes_gets_every_frame_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While it does not read, its frames wait in its own queue and then go through
    uvicorn's per-connection encoder (no context, like the shared frames); the
    others keep getting the shared frames. When it reads again it gets all of them
    in order, and later broadcasts take the shared path again."""
    fallback = count_fallback_sends(monkeypatch)
    limits = SendLimits(max_messages=10_000, max_bytes=64 * 1024 * 1024)
    async with fanout(send_limits=limits) as (service, url):
        paused = await _paused_client(f"{url}/ws")
        async with connect(f"{url}/ws", max_size=None) as reader:
            paused_id = await ready(paused)
            await ready(reader)
            # A small server-side send buffer too, so a few frames fill both ends.
            protocol: Any = service.connection(paused_id).transport
            server_socket = protocol._websocket.scope["service.direct_send"].transport
            server_socket.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
            count = 60

            async def read_all() -> list[int]:
                return await numbers(reader, count)

            reading = asyncio.create_task(read_all())
            for n in range(count):
                await service.broadcast(event(n), topic="t")
                await asyncio.sleep(0.001)
            assert await asyncio.wait_for(reading, 20 * UNIT) == list(range(count))
            assert fallback.get(port_of(reader), 0) == 0
            held = fallback.get(port_of(paused), 0)
            assert held > 0, "the paused client's frames should have waited"
            assert await numbers(paused, count) == list(range(count))
            # Drained: the next broadcasts take the shared path again.
            for _ in range(int(200 * UNIT)):
                if service.connection(paused_id).backlog == 0:
                    break
                await asyncio.sleep(0.01)
            before = fallback.get(port_of(paused), 0)
            for n in range(count, count + 4):
                await service.broadcast(event(n), topic="t")
            assert await numbers(paused, 4) == list(range(count, count + 4))
            assert await numbers(reader, 4) == list(range(count, count + 4))
            assert fallback.get(port_of(paused), 0) - before <= 1
        await paused.close()


@pytest.mark.parametrize("endpoint", ["/ws", "/guide"])
async def test_stop_during_a_compressed_burst_closes_1001_after_whole_frames(
    endpoint: str,
) -> None:
    """Every client gets an unbroken, verified prefix of the burst, then close 1001."""
    async with fanout() as (service, url), AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(url + endpoint, max_size=None))
            for _ in range(3)
        ]
        for ws in clients:
            await ready(ws)

        async def burst() -> None:
            for n in range(400):
                await service.broadcast(event(n), topic="t")
                await asyncio.sleep(0)

        producing = asyncio.create_task(burst())
        await asyncio.sleep(0.05)
        await service.stop(timeout=5 * UNIT)
        producing.cancel()
        for ws in clients:
            got: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    got.append(check_event(await receive_json(ws, 10)))
            assert got == list(range(len(got)))
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CloseCode.GOING_AWAY


@pytest.mark.parametrize("endpoint", ["/guide", "/ws"])
async def test_the_guides_endpoint_takes_the_direct_path_uncompressed_too(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    async with fanout() as (service, url), connect(url + endpoint, compression=None) as ws:
        cid = await ready(ws)
        assert direct(service, cid)
        transport: Any = service.connection(cid).transport
        protocol = transport._websocket.scope["service.direct_send"]
        assert protocol.request is None and protocol.response is None, "handshake forgotten"
        for n in range(8):
            await service.broadcast(event(n), topic="t")
        assert await numbers(ws, 8) == list(range(8))
        assert fallback.get(port_of(ws), 0) == 0
