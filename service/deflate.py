"""permessage-deflate on uvicorn's connections, made fit for shared broadcast frames.

uvicorn (``websockets-sansio``) negotiates permessage-deflate with websockets'
``PerMessageDeflate``: out of the box each connection keeps a compressor with
context (about 26 KiB) and a decompressor (about 4.5 KiB) for its whole life,
and each message sent is compressed for that connection alone.
:func:`prepare_deflate`, called by the direct-send middleware before the
handshake response goes out, changes two things:

- **The server compresses without context** (RFC 7692 §7.1.1.1: the server may
  always choose to; it announces ``server_no_context_takeover``, which a
  response may carry whatever the offer said). Each message's compressed bytes
  then depend on nothing sent before, so one broadcast compressed once
  (:class:`service.frames.SharedDeflate`) is valid on every connection with the
  same parameters, and frames uvicorn still compresses itself (a send that had
  to wait) interleave with the shared ones. No compressor stays alive between
  messages.
- **The decompressor is made on the first compressed frame the client sends**,
  not at the handshake: idle subscribers (most of a fan-out server's
  connections) never pay for one. Decompression itself is unchanged: with the
  client's context takeover it then lives as long as the connection.

Needs the ``websockets`` package (uvicorn's default WebSocket implementation
does too); without it nothing here is used.
"""

from __future__ import annotations

import zlib
from typing import Any

from .frames import SharedDeflate, shared_deflate

__all__ = ["prepare_deflate", "shared_deflate_for"]

_EXTENSIONS_HEADER = "Sec-WebSocket-Extensions"
_NO_SERVER_CONTEXT = ("server_no_context_takeover", None)

try:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.headers import build_extension, parse_extension
except ImportError:  # pragma: no cover - no websockets: uvicorn has no sansio protocol either
    PerMessageDeflate = None  # type: ignore[assignment,misc]
else:

    class _LazyDecoder(PerMessageDeflate):
        """``PerMessageDeflate`` whose decompressor is made when a frame needs it."""

        def __getattr__(self, name: str) -> Any:
            # Only reached when ``decoder`` is not set: the first compressed frame
            # of a client with context takeover (without it, ``decode`` makes a
            # fresh one per message itself).
            if name != "decoder":
                raise AttributeError(name)
            decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
            self.decoder = decoder
            return decoder


def prepare_deflate(protocol: Any) -> None:
    """Make ``protocol``'s negotiated permessage-deflate shareable (see the module doc).

    ``protocol`` is uvicorn's sansio protocol after its handshake request was
    parsed; its response is amended only while it has not been sent.
    """
    if PerMessageDeflate is None:
        return
    for extension in protocol.conn.extensions:
        if isinstance(extension, PerMessageDeflate) and not extension.local_no_context_takeover:
            extension.local_no_context_takeover = True
            extension.__dict__.pop("encoder", None)
            if type(extension) is PerMessageDeflate:
                extension.__class__ = _LazyDecoder
                extension.__dict__.pop("decoder", None)
            response = protocol.response
            if response is not None and not protocol.handshake_complete:
                _announce_no_server_context(response.headers)


def shared_deflate_for(extensions: list[Any]) -> SharedDeflate | None:
    """The shared compressor for a connection's negotiated extensions, or ``None``
    when they are anything but one permessage-deflate without server context."""
    if PerMessageDeflate is None or len(extensions) != 1:
        return None
    (extension,) = extensions
    if not isinstance(extension, PerMessageDeflate) or not extension.local_no_context_takeover:
        return None
    return shared_deflate(extension.local_max_window_bits, extension.compress_settings)


def _announce_no_server_context(headers: Any) -> None:
    value = headers.get(_EXTENSIONS_HEADER)
    if value is None:
        return
    parsed = parse_extension(value)
    if len(parsed) != 1 or parsed[0][0] != PerMessageDeflate.name:
        return
    name, params = parsed[0]
    if _NO_SERVER_CONTEXT not in params:
        del headers[_EXTENSIONS_HEADER]
        headers[_EXTENSIONS_HEADER] = build_extension([(name, [*params, _NO_SERVER_CONTEXT])])
