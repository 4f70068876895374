"""The job-queue team's FastAPI backend: sessions, users, and HTTP producers.

``create_app(manager)`` takes whatever manager the deployment builds: a plain
:class:`JobSocketManager`, or a ``CompatWebSocketManager`` wrapping one. The
endpoint and producer code below is the team's own and does not change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, WebSocket, WebSocketDisconnect

__all__ = ["JobSocketManager", "create_app"]


class JobSocketManager:
    """Clients grouped by job session, addressable by user id."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[WebSocket]] = {}
        self.users: dict[str, WebSocket] = {}

    async def connect(self, websocket: WebSocket, session_id: str | None = None) -> None:
        await websocket.accept()
        user = websocket.query_params.get("user")
        if session_id is not None:
            self.sessions.setdefault(session_id, []).append(websocket)
        if user is not None:
            self.users[user] = websocket

    def disconnect(self, websocket: WebSocket) -> None:
        for session_id, sockets in list(self.sessions.items()):
            if websocket in sockets:
                sockets.remove(websocket)
            if not sockets:
                del self.sessions[session_id]
        for user, socket in list(self.users.items()):
            if socket == websocket:
                del self.users[user]

    def _everyone(self) -> list[WebSocket]:
        everyone: list[WebSocket] = []
        for socket in [
            *(s for group in self.sessions.values() for s in group),
            *self.users.values(),
        ]:
            if socket not in everyone:
                everyone.append(socket)
        return everyone

    async def broadcast(self, payload: Any) -> None:
        for socket in self._everyone():
            await socket.send_json(payload)

    async def broadcast_to_session(self, session_id: str, payload: Any) -> None:
        for socket in list(self.sessions.get(session_id, [])):
            await socket.send_json(payload)

    async def send_to_user(self, user_id: str, text: str) -> None:
        socket = self.users.get(user_id)
        if socket is not None:
            await socket.send_text(text)


def create_app(manager: Any) -> FastAPI:
    """The backend; ``manager`` is a :class:`JobSocketManager` or a drop-in for one."""
    app = FastAPI()

    @app.websocket("/jobs/ws")
    async def jobs_socket(websocket: WebSocket) -> None:
        await manager.connect(websocket, session_id=websocket.query_params.get("session"))
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    @app.post("/emit/broadcast")
    async def emit_broadcast(payload: Annotated[Any, Body()]) -> dict[str, bool]:
        await manager.broadcast(payload)
        return {"ok": True}

    @app.post("/emit/session/{session_id}")
    async def emit_session(session_id: str, payload: Annotated[Any, Body()]) -> dict[str, bool]:
        await manager.broadcast_to_session(session_id, payload)
        return {"ok": True}

    @app.post("/emit/user/{user_id}")
    async def emit_user(user_id: str, text: Annotated[str, Body(embed=True)]) -> dict[str, bool]:
        await manager.send_to_user(user_id, text)
        return {"ok": True}

    return app
