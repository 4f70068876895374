"""Authentication through the shim: token expiry and refresh for both wire formats,
the ``legacy.v1`` marker that lets an old-protocol browser client send a token,
and a legacy endpoint's own access check, which keeps refusing behind the shim.

Real uvicorn on 127.0.0.1, real ``websockets`` clients; the legacy endpoint code
is the verbatim one of ``tests.shim.test_manager_server.legacy_app``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket
from websockets.typing import Subprotocol

from legacy.catalogue import CATALOGUE
from service import JWTAuthenticator, WebSocketService
from service.messages import type_name
from shim.manager import CompatWebSocketManager
from shim.stages import FixedStages, Stage
from shim.translate import Translator
from shim.wire import ENVELOPE_SUBPROTOCOL, LEGACY_SUBPROTOCOL, WireFormat, negotiate
from tests.security.helpers import SECRET, hs_token
from tests.security.test_token_expiry import (
    EARLY,
    auth_frame,
    bearer,
    closed_with,
    expiring,
)
from tests.shim.test_manager_server import legacy_app
from tests.support import UNIT, connect, receive_json, refused_status, running_server, send_json

ENVELOPE = Subprotocol(ENVELOPE_SUBPROTOCOL)
LEGACY = Subprotocol(LEGACY_SUBPROTOCOL)


def test_negotiate_the_legacy_marker() -> None:
    assert negotiate([LEGACY_SUBPROTOCOL, "bearer.x"], {}) == (
        WireFormat.LEGACY,
        LEGACY_SUBPROTOCOL,
    )
    assert negotiate([LEGACY_SUBPROTOCOL, ENVELOPE_SUBPROTOCOL], {}) == (
        WireFormat.ENVELOPE,
        ENVELOPE_SUBPROTOCOL,
    )
    assert negotiate([], {}) == (WireFormat.LEGACY, None)
    assert negotiate(["bearer.x"], {"format": "envelope"}) == (WireFormat.ENVELOPE, None)


@asynccontextmanager
async def shim(
    stage: Stage, app: Any = None, **options: Any
) -> AsyncIterator[tuple[WebSocketService, CompatWebSocketManager, str]]:
    service = WebSocketService(heartbeat_interval=None, **options)
    manager = CompatWebSocketManager(
        service=service,
        decider=FixedStages(default=stage),
        endpoint_topics={"/ws": ("training", "models", "system", "custom")},
    )
    async with running_server(app(manager) if app else legacy_app(manager)) as url:
        yield service, manager, url
    await manager.stop()
    manager.close()


async def next_text(ws: Any) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), 2 * UNIT))


@pytest.mark.integration
@pytest.mark.parametrize("stage", [Stage.LEGACY, Stage.NEW])
async def test_expiry_and_refresh_through_the_shim_for_both_formats(stage: Stage) -> None:
    translator = Translator()
    async with shim(stage, authenticate=JWTAuthenticator(key=SECRET)) as (service, manager, url):
        token, exp = expiring(after=1.5)
        fresh, fresh_exp = expiring(after=60)
        # Envelope clients: one lets its token expire, one refreshes it.
        expiring_new = await connect(f"{url}/ws", subprotocols=[ENVELOPE], **_bearer(token))
        hello = await receive_json(expiring_new)
        assert hello["data"]["expires_at"] == exp
        refreshing_new = await connect(f"{url}/ws", subprotocols=[ENVELOPE], **_bearer(token))
        cid = (await receive_json(refreshing_new))["data"]["connection_id"]
        await send_json(refreshing_new, auth_frame(hs_token("mallory"), "other"))
        mismatch = await receive_json(refreshing_new)
        assert (mismatch["id"], mismatch["data"]["code"]) == ("other", "principal_mismatch")
        await send_json(refreshing_new, auth_frame("forged", "bad"))
        assert (await receive_json(refreshing_new))["data"]["code"] == "invalid_token"
        await send_json(refreshing_new, auth_frame(fresh, "fresh"))
        ack = await receive_json(refreshing_new)
        assert ack["type"] == "connection_established" and ack["id"] == "fresh"
        assert ack["data"]["connection_id"] == cid
        assert ack["data"]["expires_at"] == fresh_exp
        # Old-protocol clients: a header token that expires, and a legacy.v1 one refreshed.
        expiring_old = await connect(f"{url}/ws", additional_headers=bearer(token))
        refreshing_old = await connect(
            f"{url}/ws", subprotocols=[LEGACY, Subprotocol(f"bearer.{token}")]
        )
        assert refreshing_old.subprotocol == LEGACY_SUBPROTOCOL
        await send_json(refreshing_old, auth_frame(fresh, "old-fresh"))
        old_ack = await next_text(refreshing_old)
        assert old_ack["type"] == "connection_established" and old_ack["id"] == "old-fresh"
        assert service.stats()["tokens_refreshed"] == 2

        closes = await asyncio.gather(closed_with(expiring_new), closed_with(expiring_old))
        for code, reason, seen in closes:
            assert (code, reason) == (1008, "token expired")
            assert exp - EARLY <= seen <= exp + 0.5 * UNIT
        assert service.stats()["closed_token_expired"] == 2

        # The refreshed ones still work, each in its own format, after the first expiry.
        assert time.time() > exp
        item = CATALOGUE[0]
        await manager.broadcast(item.fresh())
        assert await next_text(refreshing_old) == item.payload
        event = await receive_json(refreshing_new)
        assert event["type"] == type_name(translator.to_standard(item.fresh()).message.type)
        await refreshing_old.send("hello")
        assert await asyncio.wait_for(refreshing_old.recv(), 2 * UNIT) == "echo: hello"
        await refreshing_new.send("hello")
        assert (await receive_json(refreshing_new))["data"] == {"text": "echo: hello"}
        for _ in range(int(100 * UNIT)):  # the endpoints saw the disconnects
            if manager.stats()["connections"] == 2:
                break
            await asyncio.sleep(0.02)
        assert manager.stats()["connections"] == 2
        await refreshing_old.close()
        await refreshing_new.close()


def _bearer(token: str) -> dict[str, Any]:
    return {"additional_headers": bearer(token)}


@pytest.mark.integration
async def test_an_old_browser_client_sends_its_token_with_the_legacy_marker() -> None:
    async with shim(Stage.LEGACY, authenticate=JWTAuthenticator(key=SECRET)) as (
        service,
        manager,
        url,
    ):
        token = hs_token("olga")
        offered = [LEGACY, Subprotocol(f"bearer.{token}")]
        async with connect(f"{url}/ws", subprotocols=offered) as ws:
            assert ws.subprotocol == LEGACY_SUBPROTOCOL
            assert ws.response is not None and token not in str(ws.response.headers)
            item = CATALOGUE[1]
            await manager.broadcast(item.fresh())
            assert await next_text(ws) == item.payload  # the old payload, no envelope
            route = next(manager.routes())
            assert route.format is WireFormat.LEGACY
            assert service.principal(route.connection_id)["sub"] == "olga"
        assert await refused_status(f"{url}/ws", subprotocols=[LEGACY]) == 403
        expired = Subprotocol(f"bearer.{hs_token('olga', exp_in=-5)}")
        assert await refused_status(f"{url}/ws", subprotocols=[LEGACY, expired]) == 403
    async with shim(Stage.NEW) as (_, manager, url):  # no authentication: still echoed
        ws = await connect(f"{url}/ws", subprotocols=[LEGACY])
        assert ws.subprotocol == LEGACY_SUBPROTOCOL
        item = CATALOGUE[0]
        await manager.broadcast(item.fresh())
        assert await next_text(ws) == item.payload
        await ws.close()


API_KEY = "legacy-endpoint-key"


def self_guarded_app(manager: CompatWebSocketManager) -> FastAPI:
    """A legacy endpoint with its own access check before ``manager.connect``."""

    def has_key(websocket: WebSocket) -> bool:
        key = websocket.query_params.get("api_key") or websocket.headers.get("x-api-key")
        return key == API_KEY

    return legacy_app(manager, admits=has_key)


@pytest.mark.integration
@pytest.mark.parametrize("stage", [Stage.LEGACY, Stage.NEW])
async def test_the_legacy_endpoints_own_auth_keeps_refusing_through_the_shim(
    stage: Stage,
) -> None:
    async with shim(stage, app=self_guarded_app) as (service, manager, url):
        assert await refused_status(f"{url}/ws") == 403
        assert await refused_status(f"{url}/ws?api_key=wrong") == 403
        assert await refused_status(f"{url}/ws", subprotocols=[ENVELOPE]) == 403
        assert await refused_status(f"{url}/ws", subprotocols=[LEGACY]) == 403
        assert service.stats()["connections_total"] == 0
        assert manager.stats()["connections"] == 0
        async with connect(f"{url}/ws?api_key={API_KEY}") as old:
            await old.send("hi")
            assert await asyncio.wait_for(old.recv(), 2 * UNIT) == "echo: hi"
        headers = {"X-Api-Key": API_KEY}
        async with connect(f"{url}/ws", subprotocols=[ENVELOPE], additional_headers=headers) as new:
            assert (await receive_json(new))["type"] == "connection_established"
    # Both checks apply when the service authenticates too: the endpoint's, then the token.
    async with shim(stage, app=self_guarded_app, authenticate=JWTAuthenticator(key=SECRET)) as (
        service,
        _,
        url,
    ):
        token_only = bearer(hs_token("otto"))
        assert await refused_status(f"{url}/ws", additional_headers=token_only) == 403
        assert await refused_status(f"{url}/ws?api_key={API_KEY}") == 403
        assert service.stats()["refused_auth"] == 1  # the endpoint refused the first itself
        async with connect(f"{url}/ws?api_key={API_KEY}", additional_headers=token_only) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 2 * UNIT) == "echo: hi"
