"""The sender a connection writes through: uvicorn's direct path when it has one.

Whatever shape an endpoint takes (:func:`service.asgi.serve`,
:class:`service.asgi.ServiceEndpoint`, or the migration guide's own route calling
``websocket_service.connect(websocket)`` and a ``receive_text()`` loop), a socket
that :class:`~service.directsend.DirectSendMiddleware` or ``ServiceEndpoint``
prepared gets the same sender: :class:`AsgiTransport`, with the pre-framed fast
path, the server's write-buffer probe (the transport cap) and the abort for a
close that timed out. Any other socket is written through as it is.

Starlette-free: it only reads the ASGI ``scope`` and the raw ``send`` a Starlette
``WebSocket`` keeps (``_send``), so the hub can use it without importing Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .directsend import SCOPE_KEY, SERVER_KEY, abort_connection, direct_writer, transport_probe

__all__ = ["AsgiTransport", "transport_for"]


class AsgiTransport:
    """Sends text frames straight to the ASGI ``send`` of an accepted WebSocket.

    Starlette's ``send_text`` re-checks the connection state and builds the event
    on every call; on the broadcast path that is per-recipient work the service
    does not need (it tracks its connections itself; a send to a gone client
    raises from the server and removes the connection). Closing still goes
    through Starlette, which keeps its state right. ``write_now`` is the
    pre-framed fast path when the server allows one (:mod:`service.directsend`),
    else ``None``; ``write_buffer_size`` returns what the server's transport holds
    unsent (capped by ``SendLimits.max_transport_bytes``), ``None`` when unknown.
    """

    __slots__ = ("_send", "_websocket", "write_buffer_size", "write_now")

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket
        self._send: Callable[[dict[str, Any]], Awaitable[None]] = websocket._send
        self.write_now: Callable[[str], bool] | None = direct_writer(websocket)
        self.write_buffer_size: Callable[[], int] | None = transport_probe(websocket.scope)

    def send_text(self, data: str) -> Awaitable[None]:
        return self._send({"type": "websocket.send", "text": data})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._websocket.close(code, reason)

    def abort(self) -> bool:
        """Drop the TCP connection (a close that timed out); False if the server cannot."""
        return abort_connection(self._websocket.scope)


def transport_for(websocket: Any) -> Any:
    """The sender for an accepted socket: :class:`AsgiTransport` when the direct-send
    middleware (or ``ServiceEndpoint``) noted the server's protocol in its scope and
    it is a Starlette-style socket, else ``websocket`` itself."""
    scope = getattr(websocket, "scope", None)
    if (
        isinstance(scope, Mapping)
        and (SCOPE_KEY in scope or SERVER_KEY in scope)
        and callable(getattr(websocket, "_send", None))
    ):
        return AsgiTransport(websocket)
    return websocket
