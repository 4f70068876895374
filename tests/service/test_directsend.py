"""service.directsend: pre-built frames, the write_now fast path and its fallback.

The first two groups are pure (data in, bytes out; a fake uvicorn protocol, no
sockets). The last group runs a real uvicorn with ``DirectSendMiddleware`` (the
stalled-client test also with ``ServiceEndpoint``) and real ``websockets``
clients, and is marked ``integration``.
"""

from __future__ import annotations

import asyncio
import gc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket
from hypothesis import given
from hypothesis import strategies as st
from starlette.websockets import WebSocket as StarletteWebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from service import CloseCode, MessageType, SendLimits, WebSocketMessage, WebSocketService
from service.asgi import AsgiTransport, ServiceEndpoint, lifespan, serve
from service.connection import _NO_QUEUE, Connection
from service.directsend import (
    SCOPE_KEY,
    DirectSendMiddleware,
    direct_protocol,
    direct_writer,
    enable_direct_send,
    forget_handshake,
    frame_header,
    text_frame,
    write_deflated_now,
    write_text_now,
)
from service.frames import shared_deflate
from tests.support import (
    UNIT,
    connect,
    receive_json,
    receive_until,
    running_server,
    send_json,
    stalled_fan_out,
)


def reference_frame(text: str) -> bytes:
    """What websockets' own serializer (and so uvicorn's send) puts on the wire."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


# -- frames ------------------------------------------------------------------------

BOUNDARY_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
def test_text_frame_matches_websockets_at_length_boundaries(length: int) -> None:
    text = "x" * length
    expected = reference_frame(text)
    assert text_frame(text) == expected
    assert frame_header(length) == expected[: len(expected) - length]


@pytest.mark.parametrize(
    "text",
    [
        "é" * 63,  # 63 characters, 126 bytes: the 16-bit length form, not the 7-bit one
        "€" * 42,  # 126 bytes
        "😀" * 32,  # 128 bytes
        "€" * 21_845 + "é",  # 65537 bytes: the 64-bit length form
        "naïve ☃ \u0000 \U0010ffff",
    ],
)
def test_text_frame_length_counts_utf8_bytes_not_characters(text: str) -> None:
    assert text_frame(text) == reference_frame(text)


@given(st.text())
def test_text_frame_matches_websockets_for_any_text(text: str) -> None:
    assert text_frame(text) == reference_frame(text)


@given(st.integers(min_value=0, max_value=1 << 17))
def test_frame_header_matches_websockets_for_any_length(length: int) -> None:
    expected = reference_frame("x" * length)
    assert frame_header(length) == expected[: len(expected) - length]


def test_the_same_text_object_gets_the_same_bytes_object() -> None:
    text = "a" * 300
    first = text_frame(text)
    assert text_frame(text) is first
    assert first == reference_frame(text)


def test_an_equal_but_distinct_text_still_gets_the_right_bytes() -> None:
    text = "".join(["a" * 150, "b" * 150])
    twin = "".join(["a" * 150, "b" * 150])
    assert text == twin and text is not twin
    assert text_frame(text) == text_frame(twin) == reference_frame(text)


def test_alternating_texts_stay_correct() -> None:
    one, two = "one" * 50, "ü" * 70
    for _ in range(4):
        assert text_frame(one) == reference_frame(one)
        assert text_frame(two) == reference_frame(two)


def test_a_new_text_after_the_cached_one_was_dropped_is_framed_afresh() -> None:
    for i in range(200):
        # Fresh objects of equal length whose ids may repeat once the old one is freed.
        text = f"{i:05d}" * 30
        assert text_frame(text) == reference_frame(text)
        del text
        gc.collect(0)


# -- the fast path and its fallback, against a fake uvicorn protocol ---------------


def payload_of(frame: bytes) -> str:
    """The text of one unmasked frame built by text_frame or a SharedDeflate."""
    marker = frame[1] & 0x7F
    start = 2 if marker < 126 else 4 if marker == 126 else 10
    payload = frame[start:]
    if frame[0] & 0x40:  # RSV1: compressed without context
        payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
    return payload.decode()


class FakeTransport:
    def __init__(self, wire: list[tuple[str, str]]) -> None:
        self.wire = wire
        self.closing = False
        self.fail = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("socket gone")
        self.wire.append(("direct", payload_of(data)))


class FakeProtocol:
    """The attributes of uvicorn's WebSocketsSansIOProtocol that write_now reads.

    ``send`` behaves like uvicorn's: it waits until the transport is writable.
    Both paths append to one ``wire`` list, so the order across them is visible.
    """

    def __init__(self) -> None:
        self.wire: list[tuple[str, str]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = False
        self.conn = SimpleNamespace(state=State.OPEN, extensions=[])
        self.transport = FakeTransport(self.wire)
        self.closes: list[tuple[int, str | None]] = []
        self.handshake_complete = True
        self.request: object | None = None
        self.response: object | None = None

    async def send(self, message: Any) -> None:
        await self.writable.wait()
        assert message["type"] == "websocket.send"
        self.wire.append(("asgi", message["text"]))

    async def close(self, code: int, reason: str | None) -> None:
        self.closes.append((code, reason))


class FakeSender:
    """What AsgiTransport is over uvicorn: the fast path, else the ASGI send."""

    def __init__(self, protocol: FakeProtocol) -> None:
        self.write_now = partial(write_text_now, protocol)
        self.protocol = protocol

    def send_text(self, data: str) -> Awaitable[None]:
        return self.protocol.send({"type": "websocket.send", "text": data})

    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]:
        return self.protocol.close(code, reason)


class Harness:
    def __init__(self, **limits: Any) -> None:
        self.protocol = FakeProtocol()
        self.transport = FakeSender(self.protocol)
        self.dead: list[tuple[str, int]] = []
        self.connection = Connection(
            "c1",
            self.transport,
            metadata={},
            limits=SendLimits(**limits),
            on_dead=lambda _conn, reason, code: self.dead.append((reason, code)),
            last_seen=0.0,
        )

    @property
    def wire(self) -> list[tuple[str, str]]:
        return self.protocol.wire

    async def drained(self) -> None:
        writer = self.connection._writer
        if writer is not None:
            await asyncio.wait_for(writer, 2 * UNIT)


def _not_writable(protocol: FakeProtocol) -> None:
    protocol.writable.clear()


def _close_sent(protocol: FakeProtocol) -> None:
    protocol.close_sent = True


def _state(state: State) -> Callable[[FakeProtocol], None]:
    def apply(protocol: FakeProtocol) -> None:
        protocol.conn.state = state

    return apply


def _deflate(protocol: FakeProtocol) -> None:
    protocol.conn.extensions = [PerMessageDeflate(False, False, 12, 12)]


def _transport_closing(protocol: FakeProtocol) -> None:
    protocol.transport.closing = True


UNSAFE = {
    "not writable": _not_writable,
    "close sent": _close_sent,
    "state connecting": _state(State.CONNECTING),
    "state closing": _state(State.CLOSING),
    "state closed": _state(State.CLOSED),
    "extension negotiated": _deflate,
    "transport closing": _transport_closing,
}


async def test_write_now_writes_one_prebuilt_frame_when_safe() -> None:
    h = Harness()
    assert h.transport.write_now("hello") is True
    assert h.wire == [("direct", "hello")]
    h.connection.deliver("world")
    assert h.wire == [("direct", "hello"), ("direct", "world")]
    assert h.connection.sent == 1
    assert h.connection._writer is None and h.connection._queue is _NO_QUEUE


@pytest.mark.parametrize("unsafe", list(UNSAFE.values()), ids=list(UNSAFE))
async def test_write_now_declines_and_the_connection_falls_back_to_send_text(
    unsafe: Callable[[FakeProtocol], None],
) -> None:
    h = Harness()
    unsafe(h.protocol)
    assert h.transport.write_now("nope") is False
    assert h.wire == []
    h.connection.deliver("m1")
    h.protocol.writable.set()  # lets the "not writable" case's suspended send finish
    await h.drained()
    assert h.wire == [("asgi", "m1")]
    assert h.connection.sent == 1
    assert h.dead == []
    assert h.connection._writer is None and h.connection._queue is _NO_QUEUE


async def test_order_is_kept_across_a_suspended_fallback_and_the_fast_path_resumes() -> None:
    h = Harness()
    conn = h.connection
    conn.deliver("a")  # fast path
    h.protocol.writable.clear()  # the transport went over its high-water mark
    conn.deliver("b")  # falls back; uvicorn's send suspends: b becomes the writer
    assert conn._writer is not None
    conn.deliver("c")
    h.protocol.writable.set()  # write_now would succeed now, but c and b are pending
    conn.deliver("d")
    assert conn.backlog == 2
    assert h.wire == [("direct", "a")]
    await h.drained()
    assert h.wire == [("direct", "a"), ("asgi", "b"), ("asgi", "c"), ("asgi", "d")]
    assert conn.backlog == 0
    assert conn._writer is None and conn._queue is _NO_QUEUE  # the buffer is dropped again
    conn.deliver("e")  # synchronously, on the fast path again
    assert h.wire[-1] == ("direct", "e")
    assert conn.sent == 5 and h.dead == []


async def test_a_second_stall_after_draining_keeps_order_too() -> None:
    h = Harness()
    conn = h.connection
    expected: list[str] = []
    for round_ in range(3):
        h.protocol.writable.clear()
        for i in range(5):
            text = f"{round_}-{i}"
            conn.deliver(text)
            expected.append(text)
        h.protocol.writable.set()
        conn.deliver(f"{round_}-last")
        expected.append(f"{round_}-last")
        await h.drained()
    assert [text for _, text in h.wire] == expected
    assert conn.sent == len(expected) and h.dead == []


async def test_a_stalled_fallback_overflows_by_the_policy() -> None:
    h = Harness(max_messages=3)
    conn = h.connection
    h.protocol.writable.clear()
    for i in range(4):
        conn.deliver(str(i))  # "0" is in flight, "1".."3" fill the buffer
    assert h.dead == []
    conn.deliver("4")
    assert h.dead == [("send buffer full: client too slow", CloseCode.TRY_AGAIN_LATER)]
    assert conn.closed and conn.backlog == 0
    conn.deliver("5")
    assert len(h.dead) == 1
    conn.cancel_writer()
    await asyncio.sleep(0)


async def test_a_write_now_that_raises_marks_the_connection_dead_once() -> None:
    h = Harness()
    h.protocol.transport.fail = True
    h.connection.deliver("a")
    assert h.dead == [("send failed: ConnectionResetError", CloseCode.INTERNAL_ERROR)]
    assert h.connection.closed and h.connection.failed == 1
    h.connection.deliver("b")
    h.protocol.transport.fail = False
    h.connection.deliver("c")
    assert len(h.dead) == 1
    assert h.wire == []


async def test_a_write_now_that_raises_while_releasing_a_hold_stops_there() -> None:
    h = Harness()
    conn = h.connection
    conn.hold()
    conn.deliver("live-1")
    conn.deliver("live-2")
    assert h.wire == []
    h.protocol.transport.fail = True
    conn.release(["ack"])
    assert h.dead == [("send failed: ConnectionResetError", CloseCode.INTERNAL_ERROR)]
    assert conn.backlog == 0 and h.wire == []


async def test_release_after_hold_goes_out_on_the_fast_path_in_order() -> None:
    h = Harness()
    conn = h.connection
    conn.hold()
    conn.deliver("live-1")
    conn.deliver("live-2")
    conn.release(["ack", "replay"])
    assert h.wire == [("direct", t) for t in ("ack", "replay", "live-1", "live-2")]
    assert conn._queue is _NO_QUEUE


async def test_close_goes_through_the_asgi_close() -> None:
    h = Harness()
    await h.connection.close(4000, "bye", timeout=UNIT)
    assert h.protocol.closes == [(4000, "bye")]


# -- wiring: which transport a socket gets -------------------------------------------


async def _ignore(*_: Any) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": 1000}


def _scope() -> dict[str, Any]:
    return {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": []}


def test_enable_direct_send_ignores_a_send_that_is_not_uvicorns() -> None:
    scope = _scope()
    enable_direct_send(scope, _ignore)
    assert SCOPE_KEY not in scope and direct_protocol(scope) is None
    wrapped = FakeProtocol()  # has the attributes, but is not uvicorn's class
    enable_direct_send(scope, wrapped.send)
    assert direct_protocol(scope) is None


def _bare_sansio_protocol() -> Any:
    protocol: Any = WebSocketsSansIOProtocol.__new__(WebSocketsSansIOProtocol)
    for name in ("writable", "close_sent", "transport", "handshake_complete"):
        setattr(protocol, name, None)
    protocol.conn = SimpleNamespace(extensions=[])
    return protocol


def test_enable_direct_send_finds_uvicorns_sansio_protocol() -> None:
    protocol = _bare_sansio_protocol()
    scope = _scope()
    enable_direct_send(scope, protocol.send)
    assert direct_protocol(scope) is protocol


@pytest.mark.parametrize("rename", ["writable", "conn.extensions"])
def test_a_protocol_missing_what_the_fast_path_reads_is_left_alone(rename: str) -> None:
    protocol = _bare_sansio_protocol()
    if rename == "writable":
        del protocol.writable  # as if a uvicorn release renamed it
    else:
        protocol.conn = SimpleNamespace()  # ... or websockets renamed this one
    scope = _scope()
    enable_direct_send(scope, protocol.send)
    assert direct_protocol(scope) is None


def test_the_transport_has_a_fast_path_only_with_a_protocol_in_scope() -> None:
    plain = StarletteWebSocket(_scope(), _receive, _ignore)
    assert AsgiTransport(plain).write_now is None
    scope = _scope()
    scope[SCOPE_KEY] = protocol = FakeProtocol()
    fast = AsgiTransport(StarletteWebSocket(scope, _receive, _ignore))
    assert fast.write_now is not None and fast.write_now("hi")
    assert protocol.wire == [("direct", "hi")]


def _writer_for(extensions: list[Any]) -> Any:
    scope = _scope()
    scope[SCOPE_KEY] = protocol = FakeProtocol()
    protocol.conn.extensions = extensions
    return direct_writer(StarletteWebSocket(scope, _receive, _ignore))


def test_the_writer_matches_what_the_connection_negotiated() -> None:
    plain = _writer_for([])
    assert plain.func is write_text_now
    shared = _writer_for([PerMessageDeflate(False, True, 15, 11, {"memLevel": 5})])
    assert shared.func is write_deflated_now
    assert shared.args[1] is shared_deflate(11, {"memLevel": 5})
    # A server side that keeps compression context (not prepared by the middleware),
    # or any other extension: no shared frames, uvicorn's own send.
    assert _writer_for([PerMessageDeflate(False, False, 15, 12)]) is None
    assert _writer_for([SimpleNamespace(name="x-other")]) is None
    two = [PerMessageDeflate(False, True, 15, 12), SimpleNamespace(name="x-other")]
    assert _writer_for(two) is None


def test_a_shared_compressed_frame_is_written_only_when_uvicorn_would_write() -> None:
    protocol = FakeProtocol()
    shared = shared_deflate(12, {"memLevel": 5})
    text = "compressed once " * 20
    assert write_deflated_now(protocol, shared, text)
    assert protocol.wire == [("direct", text)]
    for unsafe in UNSAFE.values():
        refused = FakeProtocol()
        unsafe(refused)
        if refused.conn.extensions:  # the plain writer's own condition, not this one's
            continue
        assert not write_deflated_now(refused, shared, text)
        assert refused.wire == []


def test_the_handshake_is_forgotten_only_once_it_is_complete() -> None:
    protocol = FakeProtocol()
    protocol.handshake_complete = False
    protocol.request, protocol.response = object(), object()
    scope = {SCOPE_KEY: protocol}
    forget_handshake(scope)
    assert protocol.request is not None and protocol.response is not None
    protocol.handshake_complete = True
    forget_handshake(scope)
    assert protocol.request is None and protocol.response is None
    forget_handshake({})  # no direct protocol: nothing to do


async def test_the_middleware_marks_websockets_only() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    protocol = _bare_sansio_protocol()
    middleware = DirectSendMiddleware(app)
    await middleware({"type": "http", "path": "/"}, _ignore, protocol.send)
    await middleware(_scope(), _ignore, protocol.send)
    await middleware(_scope(), _ignore, _ignore)
    assert [SCOPE_KEY in scope for scope in seen] == [False, True, False]


# -- a real uvicorn with DirectSendMiddleware --------------------------------------


def direct(service: WebSocketService, connection_id: str) -> bool:
    """Whether the connection's sends may take the pre-framed fast path."""
    return getattr(service.connection(connection_id).transport, "write_now", None) is not None


TIMESTAMP = "2026-01-01T00:00:00+00:00"


def make_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))
    app.add_middleware(DirectSendMiddleware)

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket, topics=["t"], metadata={"endpoint": "direct"})

    return app


@asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    async with running_server(make_app(service)) as url:
        yield service, url


@pytest.fixture
def fallback_sends(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """``websocket.send`` events that reached uvicorn, by the client's local port.

    A frame written on the fast path never becomes an ASGI event, so a count of
    zero means every frame of that client went out directly.
    """
    counts: dict[int, int] = {}
    original = WebSocketsSansIOProtocol.send

    async def counting(self: WebSocketsSansIOProtocol, message: Any) -> None:
        if message["type"] == "websocket.send":
            assert self.client is not None
            counts[self.client[1]] = counts.get(self.client[1], 0) + 1
        await original(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send", counting)
    return counts


def port_of(ws: Any) -> int:
    port: int = ws.local_address[1]
    return port


async def ready(ws: Any) -> str:
    """Wait for connection_established, and until serve() subscribed the topics.

    serve() subscribes before it reads the first client frame, so the pong is the
    barrier. Returns the connection id.
    """
    established = await receive_json(ws)
    assert established["type"] == "connection_established"
    await send_json(ws, {"type": "ping", "id": "ready"})
    await receive_until(ws, "pong")
    connection_id: str = established["data"]["connection_id"]
    return connection_id


async def recv_text(ws: Any) -> str:
    text = await asyncio.wait_for(ws.recv(), 2 * UNIT)
    assert isinstance(text, str)
    return text


def sized(pad: str, seq: int = 0) -> WebSocketMessage:
    return WebSocketMessage(
        type=MessageType.CUSTOM, data={"n": seq, "pad": pad}, timestamp=TIMESTAMP
    )


@pytest.mark.integration
async def test_broadcasts_arrive_intact_and_in_order_on_the_fast_path(
    fallback_sends: dict[int, int],
) -> None:
    async with server() as (service, url):
        clients = [await connect(f"{url}/ws", compression=None) for _ in range(3)]
        try:
            ids = [await ready(ws) for ws in clients]
            for cid in ids:
                assert direct(service, cid)
            # Calibrate the envelope's size at seq 1 so the next ones (seq 2..8,
            # same digit count) can be padded to an exact frame payload length.
            await service.broadcast(sized("", 1), topic="t")
            calibration = [await recv_text(ws) for ws in clients]
            base = len(calibration[0].encode()) - 1  # minus the one digit of "n"
            targets = [125, 126, 127, 65535, 65536, 70_000]
            assert base < targets[0]
            for n, target in enumerate(targets, start=2):
                await service.broadcast(sized("x" * (target - base - 1), n), topic="t")
            utf8 = "é€😀" * 3000
            await service.broadcast(sized(utf8, 8), topic="t")
            for ws in clients:
                got = [await recv_text(ws) for _ in range(7)]
                assert [len(text.encode()) for text in got[:-1]] == targets
                wire = [orjson.loads(text) for text in got]
                assert [m["data"]["n"] for m in wire] == list(range(2, 9))
                assert [m["seq"] for m in wire] == list(range(2, 9))
                assert wire[-1]["data"]["pad"] == utf8
            # connection_established, the pong, 8 broadcasts: all written directly
            assert [fallback_sends.get(port_of(ws), 0) for ws in clients] == [0, 0, 0]
        finally:
            for ws in clients:
                await ws.close()


@pytest.mark.integration
async def test_many_small_broadcasts_keep_their_order(fallback_sends: dict[int, int]) -> None:
    async with server() as (service, url), connect(f"{url}/ws", compression=None) as ws:
        cid = await ready(ws)
        for i in range(500):
            await service.broadcast(sized(str(i), i), topic="t")
        got = [(await receive_json(ws))["data"]["n"] for _ in range(500)]
        assert got == list(range(500))
        assert direct(service, cid)
        assert fallback_sends.get(port_of(ws), 0) == 0


@pytest.mark.integration
async def test_a_deflate_client_gets_shared_compressed_frames_directly_too(
    fallback_sends: dict[int, int],
) -> None:
    # tests/service/test_compressed_fanout.py checks the frames themselves.
    async with (
        server() as (service, url),
        connect(f"{url}/ws") as deflate,  # websockets offers permessage-deflate by default
        connect(f"{url}/ws", compression=None) as plain,
    ):
        assert deflate.protocol.extensions, "the server should have accepted permessage-deflate"
        assert not plain.protocol.extensions
        deflate_id, plain_id = await ready(deflate), await ready(plain)
        texts = ["x" * 10, "y" * 126, "ü" * 40_000, "z" * 70_000]
        for n, pad in enumerate(texts):
            await service.broadcast(sized(pad, n), topic="t")
        for ws in (deflate, plain):
            got = [await receive_json(ws) for _ in texts]
            assert [m["data"]["pad"] for m in got] == texts
        assert direct(service, deflate_id) and direct(service, plain_id)
        # connection_established, the pong and 4 broadcasts each, all written directly
        assert fallback_sends.get(port_of(deflate), 0) == 0
        assert fallback_sends.get(port_of(plain), 0) == 0


@pytest.mark.integration
async def test_a_client_that_leaves_does_not_disturb_the_others() -> None:
    async with server() as (service, url), connect(f"{url}/ws", compression=None) as stays:
        leaving = await connect(f"{url}/ws", compression=None)
        await ready(stays)
        await ready(leaving)
        await leaving.close()
        for i in range(20):
            await service.broadcast(sized("p", i), topic="t")
            await asyncio.sleep(0)
        assert [(await receive_json(stays))["data"]["n"] for _ in range(20)] == list(range(20))
        for _ in range(int(200 * UNIT)):
            if service.stats()["connections"] == 1:
                break
            await asyncio.sleep(0.01)
        assert service.stats()["connections"] == 1


@pytest.mark.integration
async def test_a_server_side_close_reaches_the_client_with_its_code() -> None:
    async with server() as (service, url), connect(f"{url}/ws", compression=None) as ws:
        cid = await ready(ws)
        await service.broadcast(sized("before", 1), topic="t")
        await service.disconnect(cid, code=4001, reason="bye")
        assert (await receive_json(ws))["data"]["pad"] == "before"
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")


def endpoint_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))
    app.add_middleware(ServiceEndpoint, service=service, path="/ws", topics=["t"])
    return app


@pytest.mark.integration
@pytest.mark.parametrize("build", [make_app, endpoint_app], ids=["middleware", "endpoint"])
async def test_a_stalled_client_on_the_fast_path_never_delays_the_others(
    build: Callable[[WebSocketService], FastAPI], fallback_sends: dict[int, int]
) -> None:
    # The legacy-path test in test_server.py, with direct writes: the stalled
    # client's transport pauses, its sends fall back and buffer, the buffer
    # overflows and it is closed with 1013; the readers get everything in order.
    count = 3000
    limits = SendLimits(max_messages=10_000, max_bytes=2_000_000)
    service = WebSocketService(heartbeat_interval=None, send_limits=limits)
    async with running_server(build(service)) as url:
        run = await stalled_fan_out(
            f"{url}/ws",
            broadcast=lambda i, pad: service.broadcast(sized(pad, i), topic="t"),
            number=lambda message: int(message["data"]["n"]),
            ready=ready,
            count=count,
        )
        stalled, fast = run.stalled, run.fast
        for got in run.received.values():
            assert got == list(range(count))
        assert service.stats()["closed_slow"] == 1
        assert service.stats()["connections"] == len(fast)
        assert fallback_sends.get(port_of(stalled), 0) > 0  # it did fall back
        # The service keeps serving: a newcomer connects and gets a broadcast.
        stalled.transport.abort()
        async with connect(f"{url}/ws", compression=None) as late:
            await ready(late)
            await service.broadcast(sized("after", count), topic="t")
            assert (await receive_json(late))["data"]["n"] == count
            for ws in fast:
                assert (await receive_json(ws))["data"]["n"] == count
        for ws in fast:
            await ws.close()
