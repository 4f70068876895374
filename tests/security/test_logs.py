"""No credential in any log line, with everything logging at DEBUG.

One session per token kind (a JWT and an opaque token) against real uvicorn with
DEBUG logging and its access log on, websockets client DEBUG logging, and the
service's structlog output at DEBUG printed to stdout (no redaction processor,
so the service itself must never log a credential). The token travels in the
query string (opted in), the Authorization header, a ``bearer.`` subprotocol and
a first ``auth`` message, plus refused attempts and a plain HTTP request with the
token in its query. Everything is captured with caplog (stdlib records) and capfd
(what the handlers and structlog wrote to stdout/stderr).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

import pytest
import structlog
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

import service.hub
from service import AuthenticationFailed, JWTAuthenticator, WebSocketService
from service.auth import extract_token, parse_auth_message
from service.handshake import Handshake
from tests.security.helpers import SECRET, hs_token, make_app
from tests.support import UNIT, connect, receive_json, running_server, send_json

pytestmark = pytest.mark.integration

_CAPTURED_LOGGERS = ("uvicorn", "uvicorn.access")  # they do not propagate to root


class OpaqueTokens:
    """An authenticator for one opaque token, from the same places as the JWT one."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.message_timeout: float | None = 2.0

    async def __call__(self, websocket: Any) -> Any:
        found = extract_token(Handshake.of(websocket), query_param="token")
        if found is None:
            return None
        return self._check(found)

    async def authenticate_message(self, websocket: Any, text: str) -> Any:
        return self._check(parse_auth_message(text))

    def _check(self, token: str) -> Any:
        if not secrets.compare_digest(token, self.token):
            raise AuthenticationFailed("invalid token")
        return {"sub": "opaque-user"}


@contextmanager
def structlog_to_stdout_at_debug() -> Iterator[None]:
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def debug_server(service: WebSocketService) -> AbstractAsyncContextManager[str]:
    """uvicorn at DEBUG with its access log, in this loop; yields the ws:// URL."""
    return running_server(make_app(service), log_level="debug", access_log=True)


async def http_get(url: str, path: str) -> bytes:
    """A bare HTTP/1.1 GET (no client library that logs the URL itself)."""
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5 * UNIT)
    writer.close()
    await writer.wait_closed()
    return response


async def session(url: str, token: str) -> None:
    async with connect(f"{url}/ws?token={token}") as ws:  # the operator opted in
        assert (await receive_json(ws))["type"] == "connection_established"
        await send_json(ws, {"type": "subscribe", "data": {"topic": "training"}, "id": "s"})
        await receive_json(ws)
    async with connect(f"{url}/ws", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
    async with connect(
        f"{url}/ws", subprotocols=[Subprotocol("envelope.v1"), Subprotocol(f"bearer.{token}")]
    ) as ws:
        assert (await receive_json(ws))["type"] == "connection_established"
    async with connect(f"{url}/ws") as ws:
        await send_json(ws, {"type": "auth", "data": {"token": token}})
        assert (await receive_json(ws))["type"] == "connection_established"
    # Refused attempts log their request line too.
    for bad in (f"{token}x", f"x{token}"):
        with pytest.raises(InvalidStatus):
            async with connect(f"{url}/ws?token={bad}"):
                pass
    assert b"200 OK" in await http_get(url, f"/health?token={token}")


@pytest.mark.parametrize("kind", ["jwt", "opaque"])
async def test_no_secret_in_any_log_line(
    kind: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = hs_token("alice") if kind == "jwt" else f"opaque-{secrets.token_hex(16)}"
    authenticate: Any = (
        JWTAuthenticator(key=SECRET, query_param="token", message_timeout=2.0)
        if kind == "jwt"
        else OpaqueTokens(token)
    )
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="websockets.client")
    with structlog_to_stdout_at_debug():
        # A fresh logger, in case an earlier test's config cached the module's one.
        monkeypatch.setattr(service.hub, "_log", structlog.get_logger("service"))
        ws_service = WebSocketService(heartbeat_interval=None, authenticate=authenticate)
        async with debug_server(ws_service) as url:
            for name in _CAPTURED_LOGGERS:
                logging.getLogger(name).addHandler(caplog.handler)
            try:
                await session(url, token)
            finally:
                for name in _CAPTURED_LOGGERS:
                    logging.getLogger(name).removeHandler(caplog.handler)
    captured = capfd.readouterr()
    lines = [
        *(record.getMessage() for record in caplog.records),
        *caplog.text.splitlines(),
        *captured.out.splitlines(),
        *captured.err.splitlines(),
    ]
    leaks = [line for line in lines if token in line]
    assert leaks == []
    text = "\n".join(lines)
    # Not vacuous: the lines that used to carry the token were captured, redacted.
    assert '"WebSocket /ws?token=[REDACTED]" [accepted]' in text
    assert '"WebSocket /ws?token=[REDACTED]" 403' in text
    assert "GET /health?token=[REDACTED] HTTP/1.1" in text  # uvicorn's access log
    assert "Authorization: Bearer [REDACTED]" in text  # websockets DEBUG headers
    assert "bearer.[REDACTED]" in text
    assert "connection_refused" in text and "connected" in text  # the service's own logs
    assert "Logging error" not in text  # the filter kept every formatter working
