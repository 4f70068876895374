"""The shim honours the service's access rules, with the legacy endpoint code unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.typing import Origin, Subprotocol

from service import JWTAuthenticator, WebSocketService
from shim.manager import CompatWebSocketManager
from shim.stages import FixedStages, Stage
from tests.security.helpers import SECRET, hs_token
from tests.shim.test_manager_server import legacy_app
from tests.support import UNIT, connect, receive_json, refused_status, running_server

pytestmark = pytest.mark.integration

ORIGIN = "https://dashboard.example"


@asynccontextmanager
async def guarded(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    service = WebSocketService(heartbeat_interval=None, **options)
    manager = CompatWebSocketManager(
        service=service,
        decider=FixedStages(default=Stage.NEW),
        endpoint_topics={"/ws": ("training", "models")},
    )
    async with running_server(legacy_app(manager)) as url:
        yield service, url
    await manager.stop()
    manager.close()


async def test_origin_auth_and_authorization_through_the_shim() -> None:
    def authorize(principal: Any, topic: str, action: str) -> bool:
        return topic != "models"

    async with guarded(
        allowed_origins=[ORIGIN],
        authenticate=JWTAuthenticator(key=SECRET),
        authorize=authorize,
        max_connections_per_ip=5,
    ) as (service, url):
        headers = {"Authorization": f"Bearer {hs_token('alice')}"}
        assert (
            await refused_status(
                f"{url}/ws", origin=Origin("https://evil.example"), additional_headers=headers
            )
            == 403
        )
        assert await refused_status(f"{url}/ws", origin=Origin(ORIGIN)) == 403  # no token
        async with connect(
            f"{url}/ws",
            origin=Origin(ORIGIN),
            subprotocols=[Subprotocol("envelope.v1"), Subprotocol(f"bearer.{hs_token('bob')}")],
        ) as ws:
            assert ws.subprotocol == "envelope.v1"
            hello = await receive_json(ws)
            assert hello["type"] == "connection_established"
            refused = await receive_json(ws)
            assert refused["data"]["code"] == "forbidden"
            cid = hello["data"]["connection_id"]
            assert service.principal(cid)["sub"] == "bob"
            assert service.topics_of(cid) == {"training"}
        async with connect(f"{url}/ws", additional_headers=headers) as legacy:  # an old client
            await legacy.send("hello")
            assert await asyncio.wait_for(legacy.recv(), 2 * UNIT) == "echo: hello"
        assert service.stats()["refused_origin"] == 1
        assert service.stats()["refused_auth"] == 1


async def test_a_percentage_rollout_is_sticky_per_user_however_the_app_names_users() -> None:
    """The JWT's ``sub`` by default; the app's own ``user_key`` (here a cookie) instead."""

    def cookie_user(websocket: Any, principal: Any) -> str | None:
        uid = websocket.cookies.get("uid")
        return None if uid is None else str(uid)

    for user_key, expected in ((None, "alice"), (cookie_user, "u-42")):
        service = WebSocketService(
            heartbeat_interval=None, authenticate=JWTAuthenticator(key=SECRET)
        )
        manager = CompatWebSocketManager(
            service=service, decider=FixedStages(default=Stage.LIVE), user_key=user_key
        )
        headers = {"Authorization": f"Bearer {hs_token('alice')}", "Cookie": "uid=u-42"}
        async with (
            running_server(legacy_app(manager)) as url,
            connect(f"{url}/ws", additional_headers=headers),
            connect(f"{url}/ws", additional_headers=headers),
        ):
            for _ in range(int(200 * UNIT)):
                if len(list(manager.routes())) == 2:
                    break
                await asyncio.sleep(0.01)
            routes = list(manager.routes())
            assert [route.stickiness_key for route in routes] == [expected, expected]
        await manager.stop()
        manager.close()
