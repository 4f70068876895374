"""Shared helpers: tokens, a socket double with a handshake, a FastAPI app over serve()."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse

from service import WebSocketService
from service.asgi import lifespan, serve
from service.testing import MockWebSocket
from tests.support import running_server

#: HMAC secret for HS256 test tokens (PyJWT warns below 32 bytes; so do we).
SECRET = "test-only-hmac-secret-0123456789abcdef"


def hs_token(sub: str = "alice", *, exp_in: float = 300, key: str = SECRET, **claims: Any) -> str:
    """An HS256 token for ``sub`` that expires ``exp_in`` seconds from now."""
    payload = {"sub": sub, "exp": int(time.time() + exp_in), **claims}
    return jwt.encode(payload, key, algorithm="HS256")


@functools.cache
def rsa_keys() -> tuple[bytes, bytes]:
    """A (private PEM, public PEM) pair, generated once per test run."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def rs_token(sub: str = "alice", *, exp_in: float = 300, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time() + exp_in), **claims}
    return jwt.encode(payload, rsa_keys()[0], algorithm="RS256")


class HandshakeSocket(MockWebSocket):
    """A MockWebSocket with an ASGI scope (headers, subprotocols, query, client)
    and an inbox that ``receive_text`` reads, for first-message authentication."""

    def __init__(
        self,
        *,
        headers: Iterable[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        query: str = "",
        client: tuple[str, int] | None = ("10.0.0.1", 50000),
        path: str = "/ws",
    ) -> None:
        super().__init__()
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": path,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "subprotocols": list(subprotocols),
            "query_string": query.encode("latin-1"),
            "client": client,
        }
        self.inbox: asyncio.Queue[str] = asyncio.Queue()

    async def receive_text(self) -> str:
        return await self.inbox.get()


def make_app(
    service: WebSocketService, *, topics: Mapping[str, Sequence[str]] | None = None
) -> FastAPI:
    """``/ws`` (no auto topics) and ``/ws/<name>`` for each entry of ``topics``."""
    app = FastAPI(lifespan=lifespan(service))

    @app.websocket("/ws")
    async def main(websocket: WebSocket) -> None:
        await serve(service, websocket)

    for path, auto in (topics or {}).items():

        async def endpoint(websocket: WebSocket, auto: Sequence[str] = auto) -> None:
            await serve(service, websocket, topics=auto)

        app.add_api_websocket_route(path, endpoint)

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


@asynccontextmanager
async def server(
    topics: Mapping[str, Sequence[str]] | None = None,
    uvicorn_config: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[WebSocketService, str]]:
    """A service behind real uvicorn on 127.0.0.1; yields it and the ``ws://`` base URL."""
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    async with running_server(
        make_app(service, topics=topics), **dict(uvicorn_config or {})
    ) as url:
        yield service, url
