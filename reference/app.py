"""Reference backend (minimal for now): the service on the embedded default."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

from service import websocket_service
from service.asgi import lifespan, serve

app = FastAPI(title="ws-migration reference backend", lifespan=lifespan(websocket_service))


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await serve(
        websocket_service, websocket, topics=["training", "models"], metadata={"endpoint": "main"}
    )


@app.get("/stats")
async def stats() -> dict[str, object]:
    return websocket_service.stats()
