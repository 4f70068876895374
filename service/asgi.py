"""FastAPI/Starlette glue: the one-line endpoint and the lifespan.

The only module of the service that imports Starlette. ``serve`` is the migration
guide's receive loop (connect, auto-subscribe, handle messages, disconnect)::

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve(websocket_service, websocket, topics=["training", "models"],
                    metadata={"endpoint": "main"})

and ``lifespan(service)`` starts and stops the service with the app::

    app = FastAPI(lifespan=lifespan(websocket_service))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .errors import ProtocolError
from .hub import WebSocketService

__all__ = ["lifespan", "serve"]


async def serve(
    service: WebSocketService,
    websocket: WebSocket,
    *,
    topics: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Run one client connection until it disconnects or the service drops it.

    Returns normally on disconnect; the connection is always unregistered.
    """
    meta = {"path": websocket.url.path, **(metadata or {})}
    connection_id = await service.connect(websocket, meta)
    try:
        for topic in topics:
            try:
                await service.subscribe(connection_id, topic)
            except ProtocolError:
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


def lifespan(
    service: WebSocketService,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """Return a FastAPI ``lifespan`` that starts ``service`` and stops it on shutdown."""

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return _lifespan
