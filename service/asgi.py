"""FastAPI/Starlette glue: the one-line endpoint and the lifespan.

The only module of the service that imports Starlette. ``serve`` is the migration
guide's receive loop (connect, auto-subscribe, handle messages, disconnect)::

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve(websocket_service, websocket, topics=["training", "models"],
                    metadata={"endpoint": "main"})

and ``lifespan(service)`` starts and stops the service with the app (and keeps
tokens out of the server's logs, see :mod:`service.redact`)::

    app = FastAPI(lifespan=lifespan(websocket_service))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .directsend import DirectSendMiddleware, enable_direct_send
from .errors import ConnectionRefused, ErrorCode, ProtocolError
from .handshake import ENVELOPE_SUBPROTOCOL, select_subprotocol
from .hub import WebSocketService
from .protocol import error_message
from .redact import install_log_redaction
from .transport import AsgiTransport

__all__ = [
    "AsgiTransport",
    "DirectSendMiddleware",
    "ServiceEndpoint",
    "lifespan",
    "serve",
]


async def serve(
    service: WebSocketService,
    websocket: WebSocket,
    *,
    topics: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    subprotocols: Iterable[str] = (ENVELOPE_SUBPROTOCOL,),
) -> None:
    """Run one client connection until it disconnects or the service drops it.

    The service's access rules run first: a refused client is closed (HTTP 403
    before the handshake completes) and this returns at once. The handshake
    accepts the first offered subprotocol in ``subprotocols``, never a
    ``bearer.<token>`` entry. Each of ``topics`` is subscribed server-side; one the
    principal may not subscribe to gets the client a ``forbidden`` error and the
    connection stays. Returns normally on disconnect; the connection is always
    unregistered.
    """
    subprotocol = select_subprotocol(websocket.scope.get("subprotocols", ()), tuple(subprotocols))
    try:
        connection_id = await service.connect(  # (no locals that outlive the handshake)
            websocket,
            {"path": websocket.scope["path"], **(metadata or {})},
            subprotocol=subprotocol,
        )
    except ConnectionRefused:
        return
    try:
        for topic in topics:
            try:
                await service.subscribe(connection_id, topic)
            except ProtocolError as error:
                if error.code is ErrorCode.FORBIDDEN:
                    await service.send(connection_id, error_message(error))
                    continue
                await service.disconnect(connection_id, code=1011, reason="bad topic config")
                raise
        while service.is_connected(connection_id):
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            await service.handle_message(
                connection_id, text if text is not None else message.get("bytes") or b""
            )
    except WebSocketDisconnect:
        pass
    finally:
        await service.disconnect(connection_id)


class ServiceEndpoint:
    """Pure ASGI middleware serving one WebSocket path with :func:`serve`, ahead of the app.

    A route inside FastAPI or Starlette keeps, for each connection and for its
    whole life, the frames and objects of every layer it went through: exception
    middleware with its own ``WebSocket``, exit stacks, dependency solving, the
    route wrappers. A dedicated fan-out endpoint needs none of that, so this
    middleware answers its ``path`` itself and passes everything else on::

        app = FastAPI(lifespan=lifespan(websocket_service))
        app.add_middleware(ServiceEndpoint, service=websocket_service, path="/ws",
                           topics=["training"], metadata={"endpoint": "main"})

    It also writes frames directly on uvicorn (see :mod:`service.directsend`).
    The path matches exactly (``root_path`` excluded); options are those of
    :func:`serve`.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        service: WebSocketService,
        path: str,
        topics: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        subprotocols: Iterable[str] = (ENVELOPE_SUBPROTOCOL,),
    ) -> None:
        self.app = app
        self.service = service
        self.path = path
        self.topics = tuple(topics)
        self.metadata = dict(metadata or {})
        self.subprotocols = tuple(subprotocols)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or _route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        enable_direct_send(scope, send)
        await self.handle(WebSocket(scope, receive, send))

    def handle(self, websocket: WebSocket) -> Awaitable[None]:
        """Serve one connection (override to wrap it, awaiting ``super().handle``).

        Returns :func:`serve`'s coroutine rather than awaiting it, so that no frame
        of this method stays alive beside it for the life of the connection.
        """
        return serve(
            self.service,
            websocket,
            topics=self.topics,
            metadata=self.metadata,
            subprotocols=self.subprotocols,
        )


def _route_path(scope: MutableMapping[str, Any]) -> str:
    """The path as the app's routes match it: without the server's ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def lifespan(
    service: WebSocketService, *, redact_logs: bool = True
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """Return a FastAPI ``lifespan`` that starts ``service`` and stops it on shutdown.

    With ``redact_logs`` (the default) it also installs the log redaction filter
    on the server's loggers at startup, after the server configured logging.
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        if redact_logs:
            install_log_redaction()
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return _lifespan
