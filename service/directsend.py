"""Pre-framed writes straight to uvicorn's socket: the broadcast fast path.

On uvicorn's default WebSocket implementation (``websockets-sansio``) every
``websocket.send`` event costs, per recipient, Starlette's exception wrapper, the
ASGI event dict, a UTF-8 encode, the ``websockets`` frame serializer and a
``bytes.join`` (and with permessage-deflate a compressor and a compression). A
broadcast sends the same text to every recipient, and a server frame is not
masked, so the frame bytes are the same for all of them: :mod:`service.frames`
builds them once per text (and compresses once per distinct set of negotiated
deflate parameters), and this module writes them to each socket's transport.

That is only correct while the connection is in the state where uvicorn itself
would write an equivalent frame: handshake done, no close sent or received, the
transport under its high-water mark, and either no extension or permessage-deflate
with a server side that keeps no compression context (:func:`enable_direct_send`
arranges that with :mod:`service.deflate`, so uvicorn's own sends and the shared
frames interleave). The
writers check exactly that on every send and otherwise decline, and the sender
(``service.asgi.AsgiTransport``) goes through the ASGI ``send`` like any other,
which also keeps uvicorn's flow control (a paused transport makes the send
suspend, and the service's connection buffers behind it).

The raw ``send`` is visible only outside Starlette's exception middleware, so
:class:`DirectSendMiddleware` (pure ASGI, added with ``app.add_middleware``) hands
uvicorn's protocol object to the service through the scope, where
:func:`service.transport.transport_for` finds it. On any other server nothing changes.

The same middleware also notes the protocol of uvicorn's other ``--ws``
implementations (``websockets``, ``wsproto``) under :data:`SERVER_KEY`: they get
no fast path, but their transport is what :func:`abort_connection` drops and
what :func:`transport_probe` measures (the bytes the server holds unsent for a
client, such as the pongs it queues for one that floods pings and never reads).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import suppress
from functools import partial
from typing import Any

from .deflate import prepare_deflate, shared_deflate_for
from .frames import SharedDeflate, frame_header, text_frame

_SansIOProtocol: type | None
_OPEN: Any = None
try:  # uvicorn's websockets-sansio is the server we know how to write to; any other
    # one (or a deployment without the websockets package) is fine too: no fast path
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - uvicorn or websockets not installed
    _SansIOProtocol = None
else:
    _SansIOProtocol = WebSocketsSansIOProtocol
    _OPEN = State.OPEN

__all__ = [
    "SCOPE_KEY",
    "SERVER_KEY",
    "DirectSendMiddleware",
    "abort_connection",
    "direct_protocol",
    "direct_writer",
    "enable_direct_send",
    "forget_handshake",
    "frame_header",
    "text_frame",
    "transport_probe",
    "write_deflated_now",
    "write_text_now",
]

#: Scope key under which the middleware leaves uvicorn's protocol object.
SCOPE_KEY = "service.direct_send"
#: Scope key of uvicorn's protocol object on any of its WebSocket implementations,
#: for its transport only (abort, write buffer size).
SERVER_KEY = "service.server_protocol"


def write_text_now(protocol: Any, text: str) -> bool:
    """Write ``text`` as one frame on uvicorn's ``protocol`` now if uvicorn would write
    the same bytes; ``False`` (nothing written) otherwise."""
    if (
        protocol.writable.is_set()
        and not protocol.close_sent
        and protocol.conn.state is _OPEN
        and not protocol.conn.extensions
    ):
        transport = protocol.transport
        if not transport.is_closing():
            transport.write(text_frame(text))
            return True
    return False


def write_deflated_now(protocol: Any, shared: SharedDeflate, text: str) -> bool:
    """Write ``text`` as the broadcast's shared compressed frame on a connection that
    negotiated permessage-deflate with ``shared``'s parameters; ``False`` (nothing
    written) when uvicorn would not write now."""
    if protocol.writable.is_set() and not protocol.close_sent and protocol.conn.state is _OPEN:
        transport = protocol.transport
        if not transport.is_closing():
            transport.write(shared.frame(text))
            return True
    return False


def direct_writer(websocket: Any) -> Callable[[str], bool] | None:
    """The fast path for any socket object with an ASGI ``scope``, or ``None``.

    Plain frames for a connection without extensions; the shared compressed frame
    for one with permessage-deflate whose server side keeps no context (what
    :func:`enable_direct_send` arranges); ``None`` for anything else.
    """
    scope = getattr(websocket, "scope", None)
    protocol = scope.get(SCOPE_KEY) if isinstance(scope, Mapping) else None
    if protocol is None:
        return None
    extensions = protocol.conn.extensions
    if not extensions:
        return partial(write_text_now, protocol)
    shared = shared_deflate_for(extensions)
    return None if shared is None else partial(write_deflated_now, protocol, shared)


def direct_protocol(scope: MutableMapping[str, Any]) -> Any | None:
    """uvicorn's protocol object for this WebSocket, if the middleware found one."""
    return scope.get(SCOPE_KEY)


def abort_connection(scope: Mapping[str, Any]) -> bool:
    """Drop the TCP connection under this WebSocket at once; False if it cannot.

    For a client that stopped reading: it cannot take even a close frame, and
    without this its socket and buffers stay until the server's keepalive gives
    up (20 s or more), or forever with keepalive off.
    """
    transport = _server_transport(scope)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: the kernel answers with a reset and frees the unsent bytes now,
        # instead of keeping an orphan socket probing a zero window for minutes.
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


def transport_probe(scope: Mapping[str, Any]) -> Callable[[], int] | None:
    """A function returning how many bytes the server's transport holds unsent for
    this WebSocket, or ``None`` when the middleware found no transport (or it
    cannot tell).

    That buffer is below the service's own bounded queue: uvicorn writes into it
    without waiting (a pong for every ping, whether or not the client reads), so
    only a check of its size bounds it. The call is cheap (``len`` of a buffer).
    """
    probe: Callable[[], int] | None = getattr(
        _server_transport(scope), "get_write_buffer_size", None
    )
    return probe


def _server_transport(scope: Mapping[str, Any]) -> Any | None:
    if not isinstance(scope, Mapping):
        return None
    protocol = scope.get(SERVER_KEY) or scope.get(SCOPE_KEY)
    return None if protocol is None else getattr(protocol, "transport", None)


def forget_handshake(scope: Mapping[str, Any] | None) -> None:
    """Let uvicorn's copy of the handshake request and response go once the socket is open.

    uvicorn keeps both (headers and all, ~3 KiB) for the life of the connection
    but reads them only while the handshake is in progress; a fan-out server with
    thousands of idle subscribers should not. The ASGI scope keeps its headers.
    Nothing happens for a scope the middleware did not prepare (or ``None``).
    """
    if not isinstance(scope, Mapping):
        return
    protocol = scope.get(SCOPE_KEY)
    if protocol is not None and protocol.handshake_complete:
        protocol.request = None
        protocol.response = None


class DirectSendMiddleware:
    """Pure ASGI middleware that lets the service write frames directly.

    Every connection the service registers from a socket it prepared uses the
    fast path: :func:`service.asgi.serve`, and the migration guide's own endpoint
    (``websocket_service.connect(websocket)``, see :mod:`service.transport`).

    Add it to the app (``app.add_middleware(DirectSendMiddleware)``); it does
    nothing for HTTP, nor for WebSockets served by anything but uvicorn. On
    uvicorn's other WebSocket implementations it only notes the transport
    (abort and write buffer size, see :data:`SERVER_KEY`), with no fast path.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            enable_direct_send(scope, send)
        await self.app(scope, receive, send)


#: Where uvicorn's WebSocket protocols live (``websockets_sansio_impl``, ``websockets_impl``,
#: ``wsproto_impl``); importing them to check would load the deprecated ones.
_UVICORN_WEBSOCKETS = "uvicorn.protocols.websockets."

#: What :func:`write_text_now` and :func:`forget_handshake` read of uvicorn's protocol.
_PROTOCOL_ATTRIBUTES = ("writable", "close_sent", "conn", "transport", "handshake_complete")


def enable_direct_send(scope: MutableMapping[str, Any], send: Any) -> None:
    """Note uvicorn's protocol in ``scope`` when ``send`` is its own, unwrapped one.

    A uvicorn release whose protocol lacks any attribute the fast path reads gets
    the ordinary path instead of failing every send. Any uvicorn WebSocket
    protocol with a transport is also noted under :data:`SERVER_KEY`.
    """
    protocol = getattr(send, "__self__", None)
    if protocol is None:
        return
    if type(protocol).__module__.startswith(_UVICORN_WEBSOCKETS) and hasattr(
        getattr(protocol, "transport", None), "get_write_buffer_size"
    ):
        scope[SERVER_KEY] = protocol
    if (
        _SansIOProtocol is not None
        and isinstance(protocol, _SansIOProtocol)
        and all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES)
        and isinstance(getattr(getattr(protocol, "conn", None), "extensions", None), list)
    ):
        scope[SCOPE_KEY] = protocol
        prepare_deflate(protocol)
