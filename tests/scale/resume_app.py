"""A minimal service app for the cross-process resume tests, run by uvicorn as a subprocess.

``/ws`` is the service's own endpoint (``serve``: subscribe with ``resume`` works);
``POST /publish`` broadcasts its JSON body as a ``custom`` message on ``feed``,
whose last value per ``data["key"]`` is retained; ``/readyz`` is 200 while the
broker is healthy. Not the reference backend: its history size is not
configurable, and its ``/ws`` answers ``subscribe`` through the shim, which does
not take ``resume`` into account::

    RESUME_BROKER_URL=redis://127.0.0.1:6379/0?prefix=p RESUME_HISTORY_SIZE=20 \\
        uvicorn --factory tests.scale.resume_app:create_app --port 8000
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from service import MessageType, WebSocketMessage, WebSocketService
from service.asgi import lifespan, serve
from service.brokers.redis import RedisBroker

__all__ = ["TOPIC", "create_app"]

TOPIC = "feed"


def create_app() -> FastAPI:
    """Build the app from ``RESUME_BROKER_URL`` and ``RESUME_HISTORY_SIZE`` (default 1000)."""
    broker = RedisBroker(
        os.environ["RESUME_BROKER_URL"],
        history_size=int(os.environ.get("RESUME_HISTORY_SIZE", "1000")),
    )
    service = WebSocketService(broker=broker, heartbeat_interval=None, retain={TOPIC: "key"})
    app = FastAPI(lifespan=lifespan(service))

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket)

    @app.post("/publish")
    async def publish(data: dict[str, Any]) -> dict[str, int]:
        message = WebSocketMessage(type=MessageType.CUSTOM, data=data)
        return {"recipients": await service.broadcast(message, topic=TOPIC)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        healthy = bool(service.broker.healthy)
        return JSONResponse({"broker": "up" if healthy else "down"}, 200 if healthy else 503)

    return app
