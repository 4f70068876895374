"""The service behind a real uvicorn server on 127.0.0.1 with real WebSocket clients."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed

from service import MessageType, SendLimits, WebSocketMessage, WebSocketService
from service.asgi import lifespan, serve
from tests.support import (
    UNIT,
    connect,
    receive_json,
    receive_until,
    running_server,
    send_json,
    stalled_fan_out,
)

pytestmark = pytest.mark.integration


def make_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket, metadata={"endpoint": "main"})

    @app.websocket("/ws/training")
    async def training_endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket, topics=["training"], metadata={"endpoint": "training"})

    return app


@asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    async with running_server(make_app(service)) as url:
        yield service, url


def progress(i: int, **extra: Any) -> WebSocketMessage:
    return WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": i, **extra})


async def subscribe(ws: Any, topic: str) -> dict[str, Any]:
    await send_json(ws, {"type": "subscribe", "data": {"topic": topic}, "id": topic})
    return await receive_until(ws, "subscribed")


async def test_topic_delivery_over_real_sockets() -> None:
    async with (
        server() as (service, url),
        connect(f"{url}/ws") as a,
        connect(f"{url}/ws") as b,
        connect(f"{url}/ws/training") as auto,
    ):
        for ws in (a, b, auto):
            assert (await receive_json(ws))["type"] == "connection_established"
        await subscribe(a, "training")
        await subscribe(b, "models")
        for i in range(5):
            await service.broadcast(progress(i), topic="training")
        await service.broadcast(
            WebSocketMessage(type=MessageType.MODEL_CREATED, data={"model_id": "m"}), topic="models"
        )
        for ws in (a, auto):
            got = [await receive_json(ws) for _ in range(5)]
            assert [m["data"]["i"] for m in got] == list(range(5))
            assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
        model = await receive_json(b)
        assert model["type"] == "model_created" and model["topic"] == "models"
        # a is not subscribed to models: the next thing it sees is its own pong
        await send_json(a, {"type": "ping", "id": "x"})
        assert (await receive_json(a))["type"] == "pong"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type":"fly"}', "unknown_type"),
        ('{"type":"subscribe"}', "missing_field"),
        ('{"type":"subscribe","data":{"topic":"a b"}}', "invalid_topic"),
        ('{"type":"custom","data":{}}', "unknown_type"),
        (b"\x01\x02", "binary_not_supported"),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_stays(
    frame: str | bytes, code: str
) -> None:
    async with (
        server() as (service, url),
        connect(f"{url}/ws") as bad,
        connect(f"{url}/ws/training") as bystander,
    ):
        await receive_json(bad)
        await receive_json(bystander)
        await bad.send(frame)
        reply = await receive_json(bad)
        assert reply["type"] == "error"
        assert reply["data"]["code"] == code
        assert reply["data"]["message"]
        await service.broadcast(progress(1), topic="training")
        assert (await receive_json(bystander))["data"]["i"] == 1
        await send_json(bad, {"type": "ping", "id": "still-there"})
        assert (await receive_json(bad))["id"] == "still-there"


async def test_oversize_message_closes_1009_or_gets_an_error_by_policy() -> None:
    frame = '{"type":"ping","pad":"' + "x" * 70_000 + '"}'
    # Default policy "close": a frame over max_message_size (64 KiB) closes with 1009.
    async with server() as (service, url), connect(f"{url}/ws") as bad:
        await receive_json(bad)
        await bad.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(bad)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert service.stats()["closed_too_big"] == 1
    # Policy "error": an error reply with code message_too_large; the connection stays.
    async with (
        server(message_too_large="error") as (service, url),
        connect(f"{url}/ws") as bad,
    ):
        await receive_json(bad)
        await bad.send(frame)
        reply = await receive_json(bad)
        assert reply["type"] == "error" and reply["data"]["code"] == "message_too_large"
        await send_json(bad, {"type": "ping", "id": "still-there"})
        assert (await receive_json(bad))["id"] == "still-there"


async def test_a_stalled_client_never_delays_the_others() -> None:
    limits = SendLimits(max_messages=10_000, max_bytes=2_000_000)
    async with server(send_limits=limits) as (service, url):
        run = await stalled_fan_out(
            f"{url}/ws/training",
            broadcast=lambda i, pad: service.broadcast(progress(i, pad=pad), topic="training"),
            number=lambda message: int(message["data"]["i"]),
        )
        for got in run.received.values():
            assert got == list(range(3000))
        assert service.stats()["closed_slow"] == 1
        assert service.stats()["connections"] == len(run.fast)
        run.stalled.transport.abort()
        for ws in run.fast:
            await ws.close()


async def test_heartbeat_timeout_removes_a_silent_client() -> None:
    async with (
        server(heartbeat_interval=0.2 * UNIT, heartbeat_timeout=0.2 * UNIT) as (
            service,
            url,
        ),
        connect(f"{url}/ws") as silent,
        connect(f"{url}/ws") as polite,
    ):
        await receive_json(silent)
        await receive_json(polite)

        async def answer_heartbeats() -> None:
            while True:
                message = await receive_json(polite, 5)
                if message["type"] == "heartbeat":
                    await send_json(polite, {"type": "pong"})

        answering = asyncio.create_task(answer_heartbeats())
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await receive_json(silent, 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        assert service.stats()["connections"] == 1
        assert service.stats()["closed_heartbeat"] == 1
        answering.cancel()


async def test_stop_closes_every_client_with_1001() -> None:
    async with server() as (service, url):
        clients = [await connect(f"{url}/ws/training") for _ in range(5)]
        for ws in clients:
            await receive_json(ws)
        await asyncio.wait_for(service.stop(timeout=2), 5 * UNIT)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await receive_json(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_last_value_on_subscribe_shows_current_progress() -> None:
    async with server(retain={"training": "session_id"}) as (service, url):
        for step in range(3):
            for session in ("s1", "s2"):
                await service.broadcast(progress(step, session_id=session), topic="training")
        async with connect(f"{url}/ws") as late:
            await receive_json(late)
            ack = await subscribe(late, "training")
            assert ack["data"]["seq"] == 6
            latest = [await receive_json(late) for _ in range(2)]
            assert {(m["data"]["session_id"], m["data"]["i"]) for m in latest} == {
                ("s1", 2),
                ("s2", 2),
            }
            await service.broadcast(progress(3, session_id="s1"), topic="training")
            assert (await receive_json(late))["seq"] == 7


async def test_schema_command_prints_the_envelope_schema() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.schema", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30 * UNIT)
    assert proc.returncode == 0
    assert orjson.loads(out)["title"] == "WebSocketMessage"
