"""The old embedded ``WebSocketManager``, as FastAPI backends write it.

This is the migration guide's "Old approach": a plain list of sockets, a
``broadcast`` that sends the same dict to each of them in turn, no topics, no
envelope. Endpoint code uses it like this::

    manager = WebSocketManager()

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket):
        await manager.connect(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)

Two generations of ``broadcast`` exist in the wild, and both are kept here:

- :class:`NaiveWebSocketManager` is the classic first version::

      async def broadcast(self, message: dict):
          for connection in self.active_connections:
              await connection.send_json(message)

  A client that went away without a close frame makes ``send_json`` raise; the
  exception leaves ``broadcast``, the clients after the dead one miss the message,
  the producer that called ``broadcast`` fails, and the dead socket stays in the
  list to fail the next broadcast too.
- :class:`WebSocketManager` is what careful legacy code ends up with: every send
  is tried, a socket whose send raises is collected, and the dead ones are removed
  after the loop. ``broadcast`` never raises because of a client.

Sockets are typed against :class:`WebSocketLike`, so Starlette's ``WebSocket``,
``service.testing.MockWebSocket`` and the shim's ports all fit without this
module importing Starlette.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

__all__ = ["NaiveWebSocketManager", "WebSocketLike", "WebSocketManager"]

_log = structlog.get_logger("legacy")


class WebSocketLike(Protocol):
    """The part of Starlette's ``WebSocket`` the legacy manager uses."""

    async def accept(self) -> None:
        """Complete the WebSocket handshake."""

    async def send_text(self, data: str) -> None:
        """Send one text frame; raises when the client is gone."""

    async def send_json(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in one text frame; raises when the client is gone."""


class WebSocketManager:
    """The embedded manager: a list of connected sockets and a broadcast loop.

    ``active_connections`` is the list itself, oldest connection first; the
    migration guide calls it ``connections``, which is the same list object.
    Not safe to share between event loops; within one loop, connecting or
    disconnecting while a broadcast awaits a send is fine (broadcast iterates a
    snapshot).
    """

    def __init__(self) -> None:
        self.active_connections: list[WebSocketLike] = []

    @property
    def connections(self) -> list[WebSocketLike]:
        """Alias of :attr:`active_connections` (the same list, not a copy)."""
        return self.active_connections

    async def connect(self, websocket: WebSocketLike) -> None:
        """Accept the handshake, then add ``websocket`` to the broadcast list.

        If ``accept`` raises, the socket is not added and the exception propagates.
        """
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocketLike) -> None:
        """Remove ``websocket`` from the broadcast list; unknown sockets are ignored.

        Synchronous, as in the legacy backend: it is called from the endpoint's
        ``except WebSocketDisconnect`` block. It does not close the socket.
        """
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def send_personal_message(
        self, message: str | dict[str, Any], websocket: WebSocketLike
    ) -> None:
        """Send to one client: a ``str`` with ``send_text``, a ``dict`` with ``send_json``.

        The socket need not be in the broadcast list. A failing send raises to
        the caller; the socket is not removed.
        """
        if isinstance(message, str):
            await websocket.send_text(message)
        else:
            await websocket.send_json(message)

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` with ``send_json`` to every connection, oldest first.

        Sends are sequential: each one is awaited before the next starts, so one
        slow client delays everyone behind it (the legacy behaviour). A socket
        whose send raises an ``Exception`` is logged and removed from the list
        after the loop; the others still get the message and ``broadcast`` does
        not raise. Cancellation is not caught.
        """
        dead: list[WebSocketLike] = []
        for connection in list(self.active_connections):
            try:
                await connection.send_json(message)
            except Exception as exc:
                _log.warning("legacy_send_failed", error=repr(exc))
                dead.append(connection)
        for connection in dead:
            self.disconnect(connection)


class NaiveWebSocketManager(WebSocketManager):
    """The classic first version, whose ``broadcast`` dies on the first dead socket.

    Kept as the reference for what old backends really did (see the module
    docstring); use :class:`WebSocketManager` for anything that runs.
    """

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every connection in turn; a failing send raises out.

        Connections after the failing one do not get the message, and the failing
        socket stays in the list.
        """
        for connection in self.active_connections:
            await connection.send_json(message)
