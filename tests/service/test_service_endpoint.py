"""service.asgi.ServiceEndpoint in front of a FastAPI app, on a real uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from service import MessageType, WebSocketMessage, WebSocketService
from service.asgi import ServiceEndpoint, lifespan
from tests.support import UNIT, connect, receive_json, receive_until, running_server, send_json

pytestmark = pytest.mark.integration


def make_app(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/other")
    async def other(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"echo:{text}")
        await websocket.close()

    app.add_middleware(
        ServiceEndpoint, service=service, path="/ws", topics=["t"], metadata={"endpoint": "main"}
    )
    return app


@asynccontextmanager
async def server() -> AsyncIterator[tuple[WebSocketService, str]]:
    service = WebSocketService(heartbeat_interval=None)
    async with running_server(make_app(service)) as url:
        yield service, url


async def established(ws: Any) -> dict[str, Any]:
    """connection_established, then a ping/pong so the endpoint's topics are subscribed."""
    first = await receive_json(ws)
    assert first["type"] == "connection_established"
    await send_json(ws, {"type": "ping", "id": "ready"})
    await receive_until(ws, "pong")
    return first


def progress(i: int) -> WebSocketMessage:
    return WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": i})


async def test_the_path_is_served_by_the_service_with_direct_sends() -> None:
    async with (
        server() as (service, url),
        connect(f"{url}/ws", compression=None) as a,
        connect(f"{url}/ws", compression=None) as b,
    ):
        hello = await established(a)
        await established(b)
        cid = hello["data"]["connection_id"]
        assert hello["data"]["metadata"] == {"path": "/ws", "endpoint": "main"}
        assert service.topics_of(cid) == frozenset({"t"})
        assert service.connection(cid).transport.write_now is not None  # type: ignore[attr-defined]
        for i in range(50):
            await service.broadcast(progress(i), topic="t")
        for ws in (a, b):
            got = [await receive_json(ws) for _ in range(50)]
            assert [m["data"]["i"] for m in got] == list(range(50))
            assert {m["topic"] for m in got} == {"t"}
        assert service.stats()["connections"] == 2


async def test_client_messages_reach_the_service_protocol() -> None:
    async with server() as (service, url), connect(f"{url}/ws", compression=None) as ws:
        await established(ws)
        await send_json(ws, {"type": "subscribe", "data": {"topic": "extra"}, "id": "s1"})
        ack = await receive_until(ws, "subscribed")
        assert ack["id"] == "s1"
        await service.broadcast(progress(7), topic="extra")
        assert (await receive_json(ws))["data"]["i"] == 7
        await ws.send("{not json")
        assert (await receive_json(ws))["data"]["code"] == "invalid_json"


async def test_other_websocket_routes_and_http_still_reach_the_app() -> None:
    async with server() as (service, url):
        async with connect(f"{url}/other") as other:
            await other.send("hi")
            assert await asyncio.wait_for(other.recv(), 2 * UNIT) == "echo:hi"
        http_url = url.replace("ws://", "http://", 1)
        async with httpx.AsyncClient(timeout=2 * UNIT) as client:
            response = await client.get(f"{http_url}/health")
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert service.stats()["connections_total"] == 0


@pytest.mark.parametrize("path", ["/ws/", "/wsx", "/ws/extra"])
async def test_only_the_exact_path_is_intercepted(path: str) -> None:
    async with server() as (service, url):
        # Not the endpoint's path, and the app has no such route: the app refuses it.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{url}{path}"):
                pass
        assert refused.value.response.status_code == 403
        assert service.stats()["connections_total"] == 0


@pytest.mark.parametrize(
    ("offered", "accepted"),
    [
        (["envelope.v1"], "envelope.v1"),
        (["other.v9", "envelope.v1"], "envelope.v1"),
        (None, None),
        (["other.v9"], None),
    ],
)
async def test_the_envelope_subprotocol_is_negotiated(
    offered: list[str] | None, accepted: str | None
) -> None:
    async with (
        server() as (service, url),
        connect(
            f"{url}/ws",
            subprotocols=None if offered is None else [Subprotocol(p) for p in offered],
            compression=None,
        ) as ws,
    ):
        assert ws.subprotocol == accepted
        hello = await established(ws)
        await service.broadcast(progress(1), topic="t")
        assert (await receive_json(ws))["data"]["i"] == 1
        assert service.is_connected(hello["data"]["connection_id"])


async def test_a_disconnecting_client_is_unregistered() -> None:
    async with server() as (service, url):
        async with connect(f"{url}/ws", compression=None) as ws:
            await established(ws)
            assert service.stats()["connections"] == 1
        for _ in range(int(200 * UNIT)):
            if service.stats()["connections"] == 0:
                break
            await asyncio.sleep(0.01)
        assert service.stats()["connections"] == 0
        assert service.stats()["disconnections_total"] == 1


async def test_the_path_is_matched_without_root_path_like_the_apps_routes() -> None:
    service = WebSocketService(heartbeat_interval=None)
    async with running_server(make_app(service), root_path="/api") as url:
        async with connect(f"{url}/other") as other:  # the app's route matches "/other"
            await other.send("hi")
            assert await asyncio.wait_for(other.recv(), 2 * UNIT) == "echo:hi"
        async with connect(f"{url}/ws", compression=None) as ws:
            await established(ws)
