"""Access rules and limits wired into the hub, with socket doubles: no network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import (
    ConnectionRefused,
    JWTAuthenticator,
    RateLimit,
    WebSocketService,
)
from service.testing import MockWebSocket
from tests.security.helpers import SECRET, HandshakeSocket, hs_token

ORIGIN = "https://dashboard.example"


def bearer(sub: str = "alice") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {hs_token(sub)}")]


def codes(socket: MockWebSocket) -> list[str]:
    return [m["data"]["code"] for m in socket.of_type("error")]


async def test_no_rule_configured_costs_nothing_and_changes_nothing() -> None:
    service = WebSocketService(heartbeat_interval=None)
    socket = MockWebSocket()
    cid = await service.connect(socket)
    assert socket.accepted and service.principal(cid) is None
    assert "principal" not in service.connection(cid).metadata


async def test_origin_refused_before_accept() -> None:
    service = WebSocketService(heartbeat_interval=None, allowed_origins=[ORIGIN])
    for origin in ("https://dashboard.example.evil.org", "null", "https://evil.example"):
        socket = HandshakeSocket(headers=[("origin", origin)])
        with pytest.raises(ConnectionRefused, match="origin not allowed"):
            await service.connect(socket)
        assert not socket.accepted  # closed before accept: Starlette answers 403
        assert socket.closed == (1008, "origin not allowed")
    good = HandshakeSocket(headers=[("origin", "HTTPS://Dashboard.Example:443")])
    await service.connect(good)
    assert good.accepted
    await service.connect(HandshakeSocket())  # no Origin: a non-browser client, allowed
    strict = WebSocketService(
        heartbeat_interval=None, allowed_origins=[ORIGIN], allow_missing_origin=False
    )
    with pytest.raises(ConnectionRefused, match="origin required"):
        await strict.connect(HandshakeSocket())
    assert service.stats()["refused_origin"] == 3
    assert service.stats()["connections"] == 2


async def test_authenticated_principal_is_kept_private() -> None:
    service = WebSocketService(heartbeat_interval=None, authenticate=JWTAuthenticator(key=SECRET))
    socket = HandshakeSocket(headers=bearer("alice"))
    cid = await service.connect(socket, {"endpoint": "main"})
    principal = service.principal(cid)
    assert principal["sub"] == "alice"
    assert service.connection(cid).metadata["principal"] is principal
    hello = socket.sent_messages[0]
    assert hello["data"]["metadata"] == {"endpoint": "main"}  # never sent to the client


async def test_authentication_refusals() -> None:
    service = WebSocketService(heartbeat_interval=None, authenticate=JWTAuthenticator(key=SECRET))
    cases = {
        "authentication required": HandshakeSocket(),
        "token expired": HandshakeSocket(
            headers=[("authorization", f"Bearer {hs_token(exp_in=-5)}")]
        ),
        "invalid token": HandshakeSocket(subprotocols=["envelope.v1", "bearer.garbage"]),
    }
    for reason, socket in cases.items():
        with pytest.raises(ConnectionRefused) as refused:
            await service.connect(socket)
        assert refused.value.reason == reason
        assert socket.closed == (1008, reason) and not socket.accepted
    assert service.stats()["refused_auth"] == 3 and service.stats()["connections"] == 0


async def test_a_plain_function_authenticator_returning_none_refuses() -> None:
    async def nobody(websocket: Any) -> None:
        return None

    service = WebSocketService(heartbeat_interval=None, authenticate=nobody)
    with pytest.raises(ConnectionRefused, match="authentication required"):
        await service.connect(HandshakeSocket())


async def test_a_crashing_authenticator_refuses_with_1011() -> None:
    async def broken(websocket: Any) -> Any:
        raise RuntimeError("identity provider down")

    service = WebSocketService(heartbeat_interval=None, authenticate=broken)
    socket = HandshakeSocket()
    with pytest.raises(ConnectionRefused) as refused:
        await service.connect(socket)
    assert refused.value.code == 1011
    assert socket.closed == (1011, "authentication unavailable")


async def test_first_message_authentication() -> None:
    auth = JWTAuthenticator(key=SECRET, message_timeout=0.2)
    service = WebSocketService(heartbeat_interval=None, authenticate=auth)

    ok = HandshakeSocket(subprotocols=["envelope.v1"])
    ok.inbox.put_nowait('{"type":"auth","data":{"token":"' + hs_token("dave") + '"}}')
    cid = await service.connect(ok, subprotocol="envelope.v1")
    assert ok.accepted and ok.subprotocol == "envelope.v1"
    assert service.principal(cid)["sub"] == "dave"
    assert ok.sent_messages[0]["type"] == "connection_established"

    silent = HandshakeSocket()
    with pytest.raises(ConnectionRefused, match="authentication timeout"):
        await service.connect(silent)
    assert silent.accepted and silent.closed == (1008, "authentication timeout")

    wrong = HandshakeSocket()
    wrong.inbox.put_nowait('{"type":"ping"}')
    with pytest.raises(ConnectionRefused, match="expected an auth message"):
        await service.connect(wrong)
    assert wrong.closed == (1008, "expected an auth message")

    forged = HandshakeSocket()
    forged.inbox.put_nowait('{"type":"auth","data":{"token":"' + hs_token(exp_in=-1) + '"}}')
    with pytest.raises(ConnectionRefused, match="token expired"):
        await service.connect(forged)
    assert service.stats()["connections"] == 1


async def test_authorize_guards_client_and_server_subscriptions() -> None:
    seen: list[tuple[str, str, str]] = []

    async def authorize(principal: Any, topic: str, action: str) -> bool:
        seen.append((principal["sub"], topic, action))
        return topic != "admin" and not (topic == "models" and principal["sub"] != "alice")

    service = WebSocketService(
        heartbeat_interval=None, authenticate=JWTAuthenticator(key=SECRET), authorize=authorize
    )
    bob = HandshakeSocket(headers=bearer("bob"))
    cid = await service.connect(bob)
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"models"},"id":"1"}')
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"training"},"id":"2"}')
    error = bob.of_type("error")[0]
    assert error["id"] == "1" and error["data"]["code"] == "forbidden"
    assert [m["id"] for m in bob.of_type("subscribed")] == ["2"]
    assert service.topics_of(cid) == {"training"}
    with pytest.raises(Exception, match="forbidden"):
        await service.subscribe(cid, "admin")  # server-side subscriptions are checked too
    with pytest.raises(Exception, match="forbidden"):
        await service.check_access(cid, "admin", "subscribe")  # for resume-like paths
    assert ("bob", "admin", "subscribe") in seen
    assert service.is_connected(cid)
    assert service.stats()["forbidden"] == 3


async def test_a_crashing_authorizer_fails_closed() -> None:
    def authorize(principal: Any, topic: str, action: str) -> bool:
        raise RuntimeError("policy store down")

    service = WebSocketService(heartbeat_interval=None, authorize=authorize)
    socket = MockWebSocket()
    cid = await service.connect(socket)
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"t"},"id":"x"}')
    assert codes(socket) == ["forbidden"] and service.topics_of(cid) == frozenset()


async def test_connections_per_principal_and_per_ip_are_capped_and_released() -> None:
    service = WebSocketService(
        heartbeat_interval=None,
        authenticate=JWTAuthenticator(key=SECRET),
        max_connections_per_principal=2,
        max_connections_per_ip=3,
    )
    first = [await service.connect(HandshakeSocket(headers=bearer("alice"))) for _ in range(2)]
    third = HandshakeSocket(headers=bearer("alice"))
    with pytest.raises(ConnectionRefused, match="too many connections"):
        await service.connect(third)
    assert third.closed == (1008, "too many connections") and not third.accepted
    await service.connect(HandshakeSocket(headers=bearer("bob")))  # 3rd from this IP
    with pytest.raises(ConnectionRefused, match="too many connections"):
        await service.connect(HandshakeSocket(headers=bearer("carol")))  # 4th from this IP
    other_ip = HandshakeSocket(headers=bearer("carol"), client=("10.0.0.2", 1))
    await service.connect(other_ip)
    await service.disconnect(first[0])  # frees one slot of alice and one of 10.0.0.1
    await service.connect(HandshakeSocket(headers=bearer("alice")))
    assert service.stats()["refused_limit"] == 2


async def test_refused_authentication_does_not_keep_an_ip_slot() -> None:
    service = WebSocketService(
        heartbeat_interval=None,
        authenticate=JWTAuthenticator(key=SECRET),
        max_connections_per_ip=1,
    )
    for _ in range(5):
        with pytest.raises(ConnectionRefused):
            await service.connect(HandshakeSocket())
    await service.connect(HandshakeSocket(headers=bearer()))


def test_per_principal_limit_needs_authentication() -> None:
    with pytest.raises(ValueError, match="needs authenticate"):
        WebSocketService(max_connections_per_principal=1)


async def test_rate_limit_errors_then_closes_1008() -> None:
    now = [0.0]
    service = WebSocketService(
        heartbeat_interval=None,
        rate_limit=RateLimit(rate=1, burst=2, max_violations=3, window=10),
        clock=lambda: now[0],
    )
    flooder, bystander = MockWebSocket(), MockWebSocket()
    cid = await service.connect(flooder)
    other = await service.connect(bystander)
    for i in range(4):
        await service.handle_message(cid, f'{{"type":"ping","id":"{i}"}}')
    assert [m["id"] for m in flooder.of_type("pong")] == ["0", "1"]
    assert [(m["id"], m["data"]["code"]) for m in flooder.of_type("error")] == [
        ("2", "rate_limited"),
        ("3", "rate_limited"),
    ]
    now[0] += 1  # one token back
    await service.handle_message(cid, '{"type":"ping","id":"4"}')
    assert flooder.of_type("pong")[-1]["id"] == "4"
    await service.handle_message(cid, '{"type":"ping","id":"5"}')  # third violation
    assert flooder.closed == (1008, "rate limit exceeded")
    assert not service.is_connected(cid)
    await service.handle_message(other, '{"type":"ping","id":"b"}')
    assert bystander.of_type("pong")[0]["id"] == "b"
    stats = service.stats()
    assert stats["rate_limited"] == 2 and stats["closed_rate_limited"] == 1


async def test_rate_limit_off() -> None:
    service = WebSocketService(heartbeat_interval=None, rate_limit=None, clock=lambda: 0.0)
    socket = MockWebSocket()
    cid = await service.connect(socket)
    for _ in range(500):
        await service.handle_message(cid, '{"type":"ping"}')
    assert len(socket.of_type("pong")) == 500


@pytest.mark.parametrize("policy", ["close", "error"])
async def test_message_size_policy(policy: str) -> None:
    service = WebSocketService(
        heartbeat_interval=None, max_message_size=1024, message_too_large=policy
    )
    socket = MockWebSocket()
    cid = await service.connect(socket)
    await service.handle_message(cid, '{"type":"ping","pad":"' + "x" * 900 + '"}')  # fits
    for frame in ('{"type":"ping","pad":"' + "x" * 1100 + '"}', b"\x00" * 2000):
        if not service.is_connected(cid):
            break
        await service.handle_message(cid, frame)
    if policy == "close":
        assert socket.closed == (1009, "message too big") and not service.is_connected(cid)
    else:
        assert codes(socket) == ["message_too_large", "message_too_large"]
        assert service.is_connected(cid)


async def test_topic_length_is_configurable() -> None:
    service = WebSocketService(heartbeat_interval=None, max_topic_length=8)
    socket = MockWebSocket()
    cid = await service.connect(socket)
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"12345678"}}')
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"123456789"}}')
    assert codes(socket) == ["invalid_topic"]
    assert "1-8 characters" in socket.of_type("error")[0]["data"]["message"]
    with pytest.raises(Exception, match="invalid_topic"):
        await service.subscribe(cid, "x" * 9)
    longer = WebSocketService(heartbeat_interval=None, max_topic_length=300)
    lid = await longer.connect(MockWebSocket())
    await longer.subscribe(lid, "x" * 300)


async def test_slots_are_released_on_every_way_out() -> None:
    from service import MessageType, WebSocketMessage

    service = WebSocketService(
        heartbeat_interval=None,
        authenticate=JWTAuthenticator(key=SECRET),
        max_connections_per_principal=1,
        max_message_size=100,
    )
    # 1. closed 1009 by the hub
    cid = await service.connect(HandshakeSocket(headers=bearer()))
    await service.handle_message(cid, "x" * 200)
    # 2. a failed send (the socket died)
    dying = HandshakeSocket(headers=bearer())
    cid = await service.connect(dying)
    await service.subscribe(cid, "t")
    dying.fail = True
    await service.broadcast(WebSocketMessage(type=MessageType.CUSTOM), topic="t")
    await asyncio.sleep(0.01)
    assert not service.is_connected(cid)
    # 3. stop()
    await service.connect(HandshakeSocket(headers=bearer()))
    await service.stop()
    await service.start()
    await service.connect(HandshakeSocket(headers=bearer()))
    await service.stop()


async def test_admit_without_close_leaves_the_refusal_to_the_caller() -> None:
    service = WebSocketService(heartbeat_interval=None, allowed_origins=[ORIGIN])
    socket = HandshakeSocket(headers=[("origin", "https://evil.example")])
    with pytest.raises(ConnectionRefused) as refused:
        await service.admit(socket, close=False)
    assert socket.closed is None  # e.g. the shim raises Starlette's WebSocketException
    assert (refused.value.code, refused.value.reason) == (1008, "origin not allowed")
    admission = await service.admit(HandshakeSocket(headers=[("origin", ORIGIN)]))
    cid = await service.connect(HandshakeSocket(), accept=False, admission=admission)
    assert service.is_connected(cid)


async def test_stop_during_first_message_authentication() -> None:
    from service.errors import ServiceStopped

    auth = JWTAuthenticator(key=SECRET, message_timeout=5)
    service = WebSocketService(
        heartbeat_interval=None, authenticate=auth, max_connections_per_ip=2, close_timeout=1
    )
    stuck = HandshakeSocket(headers=bearer("stuck"))
    await service.connect(stuck)
    stuck.stalled = True  # its close frame hangs, which keeps stop() in progress
    socket = HandshakeSocket()
    pending = asyncio.ensure_future(service.connect(socket))
    await asyncio.sleep(0.01)
    assert socket.accepted  # waiting for the auth message
    stopping = asyncio.ensure_future(service.stop(timeout=2))
    await asyncio.sleep(0.01)
    socket.inbox.put_nowait('{"type":"auth","data":{"token":"' + hs_token() + '"}}')
    with pytest.raises(ServiceStopped):
        await pending
    assert socket.closed == (1001, "server shutting down")
    stuck.release()
    await stopping
    await service.start()
    for _ in range(2):  # both IP slots were given back
        await service.connect(HandshakeSocket(headers=bearer()))
    await service.stop()
