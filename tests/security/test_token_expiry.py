"""Token expiry during a connection, and refreshing the token with an ``auth`` message.

Sans-I/O parts (the ``auth`` frame, the expiry hooks) are data in, data out; the
hub's timer is checked with socket doubles; the rest runs through real uvicorn
and real ``websockets`` clients with HS256 tokens that expire a second or two
ahead (``exp`` is whole seconds, so :func:`expiring` rounds up to the next one).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from service import ConnectionRefused, ErrorCode, JWTAuthenticator, WebSocketService
from service.auth import ExpiringAuthenticator, claims_expiry, credentials_expiry
from service.errors import ProtocolError
from service.protocol import Reauthenticate, parse_client_frame
from tests.security.helpers import SECRET, HandshakeSocket, hs_token, server
from tests.support import UNIT, connect, receive_json, send_json

#: How early (seconds, wall clock against the loop's clock) a close may be seen.
EARLY = 0.05


def expiring(sub: str = "alice", *, after: float = 1.0) -> tuple[str, int]:
    """A token of ``sub`` whose ``exp`` is the first whole second ``after`` seconds from now."""
    exp = math.ceil(time.time() + after)
    return hs_token(sub, exp=exp), exp


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_frame(token: str, request_id: str = "r") -> dict[str, Any]:
    return {"type": "auth", "data": {"token": token}, "id": request_id}


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str, float]:
    """Read until the server closes; return its code, reason and the wall time it was seen."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await receive_json(ws, timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.time()


async def still_open(ws: ClientConnection, request_id: str = "alive") -> None:
    await send_json(ws, {"type": "ping", "id": request_id})
    reply = await receive_json(ws)
    assert (reply["type"], reply.get("id")) == ("pong", request_id)


def _block(seconds: float) -> None:
    """Hold the event loop (its timers cannot run meanwhile)."""
    time.sleep(seconds)


# -- sans I/O ----------------------------------------------------------------------


def test_auth_frame_parses_to_a_reauthenticate_event_that_hides_the_token() -> None:
    event = parse_client_frame(
        '{"type": "auth", "data": {"token": "abc.def.ghi"}, "id": 7}', max_size=1024
    )
    assert event == Reauthenticate("abc.def.ghi", "7")
    assert "abc.def.ghi" not in repr(event)
    top_level = parse_client_frame('{"type": "auth", "token": "t"}', max_size=1024)
    assert isinstance(top_level, Reauthenticate) and top_level.token == "t"
    for bad in ('{"type": "auth", "id": "x"}', '{"type": "auth", "data": {"token": ""}}'):
        with pytest.raises(ProtocolError) as refused:
            parse_client_frame(bad, max_size=1024)
        assert refused.value.code is ErrorCode.MISSING_FIELD
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame('{"type": "auth", "data": "t"}', max_size=1024)
    assert refused.value.code is ErrorCode.INVALID_MESSAGE


def test_expiry_hooks() -> None:
    auth = JWTAuthenticator(key=SECRET, leeway=5)
    assert isinstance(auth, ExpiringAuthenticator)
    assert auth.expires_at({"sub": "a", "exp": 1000}) == 1005.0
    assert auth.expires_at({"sub": "a", "exp": 1000.9}) == 1005.0  # PyJWT reads whole seconds
    assert auth.expires_at({"sub": "a"}) is None
    assert claims_expiry({"exp": 12.5}) == 12.5
    assert claims_expiry({"exp": True}) is None and claims_expiry("alice") is None

    async def plain(websocket: Any) -> Any:  # no hook: the exp claim counts
        return None

    assert credentials_expiry(plain, {"exp": 42}) == 42.0
    assert credentials_expiry(auth, {"exp": 42}) == 47.0


# -- the hub, with socket doubles ----------------------------------------------------


class SessionAuthenticator:
    """A custom authenticator: opaque session ids with their own lifetime (no JWT)."""

    def __init__(self, sessions: dict[str, tuple[str, float]]) -> None:
        self.sessions = sessions

    async def __call__(self, websocket: Any) -> dict[str, Any]:
        header = websocket.scope["headers"][0][1].decode()
        return self._principal(header.removeprefix("Session "))

    async def authenticate_message(self, websocket: Any, text: str) -> dict[str, Any]:
        event = parse_client_frame(text, max_size=None)
        assert isinstance(event, Reauthenticate)
        return self._principal(event.token)

    def _principal(self, session: str) -> dict[str, Any]:
        if session not in self.sessions:
            raise ConnectionRefused("unknown session")
        user, until = self.sessions[session]
        return {"user": user, "until": until}

    def expires_at(self, principal: dict[str, Any]) -> float:
        until: float = principal["until"]
        return until


def session_socket(session: str) -> HandshakeSocket:
    return HandshakeSocket(headers=[("authorization", f"Session {session}")])


async def test_a_custom_authenticator_takes_part_through_its_hook() -> None:
    now = time.time()
    auth = SessionAuthenticator({"s1": ("ann", now + 0.3), "s2": ("ann", now + 60)})
    service = WebSocketService(
        heartbeat_interval=None, authenticate=auth, principal_key=lambda p: p["user"]
    )
    socket = session_socket("s1")
    cid = await service.connect(socket)
    assert socket.sent_messages[0]["data"]["expires_at"] == now + 0.3
    await service.handle_message(cid, '{"type": "auth", "data": {"token": "nope"}, "id": 1}')
    assert socket.of_type("error")[-1]["data"] == {
        "code": "invalid_token",
        "message": "unknown session",
    }
    await service.handle_message(cid, '{"type": "auth", "data": {"token": "s2"}, "id": 2}')
    ack = socket.sent_messages[-1]
    assert ack["type"] == "connection_established" and ack["id"] == "2"
    assert ack["data"]["connection_id"] == cid and ack["data"]["expires_at"] == now + 60
    await asyncio.sleep(0.4)
    assert service.is_connected(cid) and socket.closed is None


async def test_one_timer_per_connection_no_task_and_cancelled_when_it_goes() -> None:
    service = WebSocketService(heartbeat_interval=None, authenticate=JWTAuthenticator(key=SECRET))
    await service.connect(HandshakeSocket(headers=[("authorization", f"Bearer {hs_token()}")]))
    tasks = len(asyncio.all_tasks())
    sockets = [
        HandshakeSocket(headers=[("authorization", f"Bearer {hs_token(f'u{i}')}")])
        for i in range(50)
    ]
    ids = [await service.connect(socket) for socket in sockets]
    assert len(asyncio.all_tasks()) == tasks  # timers are loop handles, not tasks
    timers = [service._deadlines.timer(cid) for cid in ids]
    assert all(timer is not None and not timer.cancelled() for timer in timers)
    for cid in ids:
        await service.disconnect(cid)
    assert all(timer is not None and timer.cancelled() for timer in timers)
    await service.stop()
    assert not service._deadlines


async def test_a_frame_after_expiry_closes_even_before_the_timer_ran() -> None:
    auth = SessionAuthenticator({"s1": ("ann", time.time() + 0.2), "s2": ("ann", 1e12)})
    service = WebSocketService(heartbeat_interval=None, authenticate=auth)
    socket = session_socket("s1")
    cid = await service.connect(socket)
    _block(0.3)  # the deadline passes while the timer cannot run
    await service.handle_message(cid, '{"type": "auth", "data": {"token": "s2"}}')
    assert not service.is_connected(cid)
    await asyncio.sleep(0.05)
    assert socket.closed == (1008, "token expired")
    assert socket.of_type("connection_established") == socket.sent_messages[:1]
    assert service.stats()["closed_token_expired"] == 1


async def test_a_failing_expiry_hook_refuses_with_1011() -> None:
    class Broken(SessionAuthenticator):
        def expires_at(self, principal: dict[str, Any]) -> float:
            raise RuntimeError("no clock")

    service = WebSocketService(
        heartbeat_interval=None, authenticate=Broken({"s1": ("ann", time.time() + 60)})
    )
    socket = session_socket("s1")
    with pytest.raises(ConnectionRefused):
        await service.connect(socket)
    assert socket.closed == (1011, "authentication unavailable")


async def test_auth_messages_without_authentication_are_unknown() -> None:
    service = WebSocketService(heartbeat_interval=None)
    socket = HandshakeSocket()
    cid = await service.connect(socket)
    await service.handle_message(cid, '{"type": "auth", "data": {"token": "x"}, "id": "a"}')
    error = socket.of_type("error")[-1]
    assert error["data"]["code"] == "unknown_type" and error["id"] == "a"
    assert service.expires_at(cid) is None


# -- through real uvicorn ----------------------------------------------------------


@pytest.mark.integration
async def test_connection_closes_1008_token_expired_on_time() -> None:
    async with server(authenticate=JWTAuthenticator(key=SECRET)) as (service, url):
        token, exp = expiring(after=1)
        async with connect(f"{url}/ws", additional_headers=bearer(token)) as ws:
            hello = await receive_json(ws)
            assert hello["data"]["expires_at"] == exp
            assert service.expires_at(hello["data"]["connection_id"]) == exp
            code, reason, seen = await closed_with(ws)
        assert (code, reason) == (1008, "token expired")
        assert exp - EARLY <= seen <= exp + 0.5 * UNIT
        stats = service.stats()
        assert stats["closed_token_expired"] == 1 and stats["connections"] == 0


@pytest.mark.integration
async def test_a_refreshed_token_keeps_the_connection_open_past_the_first_expiry() -> None:
    async with server(authenticate=JWTAuthenticator(key=SECRET)) as (service, url):
        token, exp = expiring(after=1)
        async with connect(f"{url}/ws", additional_headers=bearer(token)) as ws:
            cid = (await receive_json(ws))["data"]["connection_id"]
            fresh, fresh_exp = expiring(after=60)
            await send_json(ws, auth_frame(fresh, "refresh-1"))
            ack = await receive_json(ws)
            assert ack["type"] == "connection_established" and ack["id"] == "refresh-1"
            assert ack["data"]["connection_id"] == cid
            assert ack["data"]["expires_at"] == fresh_exp
            assert service.principal(cid)["exp"] == fresh_exp
            await asyncio.sleep(max(0.0, exp - time.time()) + 0.3)
            await still_open(ws)
            assert service.expires_at(cid) == fresh_exp
        assert service.stats()["tokens_refreshed"] == 1


@pytest.mark.integration
async def test_refused_refreshes_keep_the_old_deadline() -> None:
    async with server(authenticate=JWTAuthenticator(key=SECRET)) as (service, url):
        token, exp = expiring(after=1.5)
        async with connect(f"{url}/ws", additional_headers=bearer(token)) as ws:
            await receive_json(ws)
            cases = {
                "other": (hs_token("mallory"), "principal_mismatch", "another principal"),
                "forged": (hs_token("alice", key="x" * 40), "invalid_token", "invalid token"),
                "expired": (hs_token("alice", exp_in=-10), "invalid_token", "token expired"),
                "garbage": ("not-a-jwt", "invalid_token", "invalid token"),
            }
            for request_id, (bad, error_code, why) in cases.items():
                await send_json(ws, auth_frame(bad, request_id))
                error = await receive_json(ws)
                assert error["type"] == "error" and error["id"] == request_id
                assert error["data"]["code"] == error_code, request_id
                assert why in error["data"]["message"], request_id
                assert bad not in str(error)
            await send_json(ws, {"type": "auth", "data": {}, "id": "empty"})
            assert (await receive_json(ws))["data"]["code"] == "missing_field"
            await still_open(ws)
            code, reason, seen = await closed_with(ws)
        assert (code, reason) == (1008, "token expired")
        assert exp - EARLY <= seen <= exp + 0.5 * UNIT
        assert service.stats()["token_refreshes_refused"] == 4


@pytest.mark.integration
async def test_expiry_enforcement_can_be_turned_off() -> None:
    async with server(authenticate=JWTAuthenticator(key=SECRET), enforce_token_expiry=False) as (
        service,
        url,
    ):
        token, exp = expiring(after=1)
        async with connect(f"{url}/ws", additional_headers=bearer(token)) as ws:
            hello = await receive_json(ws)
            assert "expires_at" not in hello["data"]
            await asyncio.sleep(max(0.0, exp - time.time()) + 0.3)
            await still_open(ws)
        assert service.stats()["closed_token_expired"] == 0
