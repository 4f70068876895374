"""Every access rule and limit through real uvicorn and real websockets clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from service import JWTAuthenticator, MessageType, RateLimit, WebSocketMessage
from tests.security.helpers import SECRET, hs_token, rs_token, rsa_keys, server
from tests.support import UNIT, connect, receive_json, receive_until, refused_status, send_json

pytestmark = pytest.mark.integration

ORIGIN = "https://dashboard.example"
ENVELOPE = Subprotocol("envelope.v1")


async def closed_code(ws: Any) -> tuple[int, str]:
    """Read until the server closes; return its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await receive_json(ws, 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_origin_allow_list() -> None:
    async with server(allowed_origins=[ORIGIN], allow_missing_origin=False) as (service, url):
        for origin in (
            "https://evil.example",
            "https://dashboard.example.evil.org",
            "null",
            "https://user@dashboard.example",
        ):
            assert await refused_status(f"{url}/ws", origin=Origin(origin)) == 403, origin
        assert await refused_status(f"{url}/ws") == 403  # missing Origin, not allowed here
        async with connect(f"{url}/ws", origin=Origin("https://DASHBOARD.example:443")) as ws:
            assert (await receive_json(ws))["type"] == "connection_established"
        assert service.stats()["refused_origin"] == 5


async def test_missing_origin_allowed_by_default() -> None:
    async with server(allowed_origins=[ORIGIN]) as (_, url), connect(f"{url}/ws") as ws:
        assert (await receive_json(ws))["type"] == "connection_established"


async def test_jwt_from_header_and_subprotocol_never_echoes_the_token() -> None:
    async with server(authenticate=JWTAuthenticator(key=SECRET)) as (service, url):
        token = hs_token("alice")
        async with connect(
            f"{url}/ws", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            hello = await receive_json(ws)
            assert service.principal(hello["data"]["connection_id"])["sub"] == "alice"
        async with connect(
            f"{url}/ws", subprotocols=[ENVELOPE, Subprotocol(f"bearer.{token}")]
        ) as ws:
            assert ws.subprotocol == "envelope.v1"
            assert ws.response is not None and token not in str(ws.response.headers)
            assert (await receive_json(ws))["type"] == "connection_established"
        assert await refused_status(f"{url}/ws") == 403
        assert await refused_status(f"{url}/ws?token={token}") == 403  # query not opted in
        expired = hs_token(exp_in=-10)
        headers = {"Authorization": f"Bearer {expired}"}
        assert await refused_status(f"{url}/ws", additional_headers=headers) == 403
        assert service.stats()["refused_auth"] == 3


async def test_rs256_and_query_token_when_opted_in() -> None:
    auth = JWTAuthenticator(key=rsa_keys()[1], algorithms=["RS256"], query_param="token")
    async with server(authenticate=auth) as (service, url):
        async with connect(f"{url}/ws?token={rs_token('erin')}") as ws:
            hello = await receive_json(ws)
            assert service.principal(hello["data"]["connection_id"])["sub"] == "erin"
        assert await refused_status(f"{url}/ws?token={hs_token('erin')}") == 403


async def test_first_message_auth_success_failure_and_deadline() -> None:
    auth = JWTAuthenticator(key=SECRET, message_timeout=0.3 * UNIT)
    async with server(authenticate=auth) as (service, url):
        async with connect(f"{url}/ws", subprotocols=[ENVELOPE]) as ws:
            assert ws.subprotocol == "envelope.v1"
            await send_json(ws, {"type": "auth", "data": {"token": hs_token("frank")}})
            assert (await receive_json(ws))["type"] == "connection_established"
            await send_json(ws, {"type": "ping", "id": "p"})
            assert (await receive_json(ws))["id"] == "p"
        async with connect(f"{url}/ws") as ws:
            await send_json(ws, {"type": "auth", "data": {"token": "forged"}})
            assert await closed_code(ws) == (1008, "invalid token")
        async with connect(f"{url}/ws") as ws:
            assert await closed_code(ws) == (1008, "authentication timeout")
        assert service.stats()["connections"] == 0


async def test_authorization_on_auto_and_client_subscriptions() -> None:
    def authorize(principal: Any, topic: str, action: str) -> bool:
        return topic != "models" or principal["sub"] == "admin"

    async with server(
        topics={"/ws/all": ["training", "models"]},
        authenticate=JWTAuthenticator(key=SECRET),
        authorize=authorize,
    ) as (service, url):
        headers = {"Authorization": f"Bearer {hs_token('viewer')}"}
        async with connect(f"{url}/ws/all", additional_headers=headers) as ws:
            assert (await receive_json(ws))["type"] == "connection_established"
            refused = await receive_json(ws)  # the auto-subscription to models
            assert refused["type"] == "error" and refused["data"]["code"] == "forbidden"
            await send_json(ws, {"type": "subscribe", "data": {"topic": "models"}, "id": "m"})
            again = await receive_json(ws)
            assert again["id"] == "m" and again["data"]["code"] == "forbidden"
            await service.broadcast(
                WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": 1}),
                topic="training",
            )
            await service.broadcast(
                WebSocketMessage(type=MessageType.MODEL_CREATED), topic="models"
            )
            got = await receive_json(ws)
            assert got["topic"] == "training"  # the connection stayed, models never came
            await send_json(ws, {"type": "ping", "id": "after"})
            assert (await receive_json(ws))["id"] == "after"


async def test_connections_per_ip_and_per_principal() -> None:
    async with server(max_connections_per_ip=2) as (service, url):
        async with connect(f"{url}/ws") as a, connect(f"{url}/ws") as b:
            await receive_json(a)
            await receive_json(b)
            assert await refused_status(f"{url}/ws") == 403
        await asyncio.sleep(0.05 * UNIT)  # the server notices the two closes
        async with connect(f"{url}/ws") as c:
            assert (await receive_json(c))["type"] == "connection_established"
    async with server(
        authenticate=JWTAuthenticator(key=SECRET), max_connections_per_principal=1
    ) as (service, url):
        alice = {"Authorization": f"Bearer {hs_token('alice')}"}
        bob = {"Authorization": f"Bearer {hs_token('bob')}"}
        async with connect(f"{url}/ws", additional_headers=alice) as a:
            await receive_json(a)
            assert await refused_status(f"{url}/ws", additional_headers=alice) == 403
            async with connect(f"{url}/ws", additional_headers=bob) as b:
                await receive_json(b)
        assert service.stats()["refused_limit"] == 1


async def test_too_many_connections_after_first_message_auth_is_close_1008() -> None:
    auth = JWTAuthenticator(key=SECRET, message_timeout=2 * UNIT)
    async with server(authenticate=auth, max_connections_per_principal=1) as (_, url):
        token = hs_token("gina")
        async with connect(f"{url}/ws") as first:
            await send_json(first, {"type": "auth", "data": {"token": token}})
            await receive_json(first)
            async with connect(f"{url}/ws") as second:
                await send_json(second, {"type": "auth", "data": {"token": token}})
                assert await closed_code(second) == (1008, "too many connections")


async def test_rate_limit_errors_then_close_1008() -> None:
    limit = RateLimit(rate=0.001, burst=3, max_violations=3, window=60)
    async with (
        server(topics={"/ws/t": ["training"]}, rate_limit=limit) as (service, url),
        connect(f"{url}/ws") as flooder,
        connect(f"{url}/ws/t") as bystander,
    ):
        await receive_json(flooder)
        await receive_json(bystander)
        for i in range(5):
            await send_json(flooder, {"type": "ping", "id": str(i)})
        replies = [await receive_json(flooder) for _ in range(5)]
        assert [r["type"] for r in replies] == ["pong"] * 3 + ["error"] * 2
        assert [r["data"]["code"] for r in replies[3:]] == ["rate_limited"] * 2
        assert [r["id"] for r in replies] == ["0", "1", "2", "3", "4"]
        await send_json(flooder, {"type": "ping", "id": "5"})
        assert await closed_code(flooder) == (1008, "rate limit exceeded")
        await service.broadcast(
            WebSocketMessage(type=MessageType.TRAINING_PROGRESS), topic="training"
        )
        assert (await receive_json(bystander))["topic"] == "training"


async def test_oversize_closes_1009_and_long_topics_are_invalid() -> None:
    async with (
        server(max_message_size=4096, max_topic_length=16) as (_, url),
        connect(f"{url}/ws") as ws,
    ):
        await receive_json(ws)
        await send_json(ws, {"type": "subscribe", "data": {"topic": "t" * 17}, "id": "long"})
        reply = await receive_json(ws)
        assert reply["id"] == "long" and reply["data"]["code"] == "invalid_topic"
        await send_json(ws, {"type": "subscribe", "data": {"topic": "x.y:z/w-1"}, "id": "ok"})
        assert (await receive_until(ws, "subscribed"))["id"] == "ok"
        await ws.send("x" * 5000)
        assert await closed_code(ws) == (1009, "message too big")
