"""Server text frames built once per broadcast, plain or permessage-deflate compressed.

A server frame is not masked, so a broadcast's frame is the same bytes for every
recipient that negotiated the same thing: no extension (:func:`text_frame`), or
permessage-deflate with the same window size and compressor settings
(:class:`SharedDeflate`). Sans-I/O: nothing here touches a socket.

Sharing a compressed frame is only correct when the server does not use
compression context (RFC 7692 §7.1.1.1): each message is compressed by a fresh
compressor, so its bytes depend on nothing sent before and any connection's
decompressor, with or without its own context, reads it. The server may always
choose that; :mod:`service.directsend` makes uvicorn's own per-connection encoder
do the same (and announces ``server_no_context_takeover``), so shared frames and
frames uvicorn compresses itself interleave correctly on one connection.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MIN_COMPRESSED_BYTES",
    "SharedDeflate",
    "deflated_frame",
    "frame_header",
    "shared_deflate",
    "text_frame",
]

_FIN_TEXT = 0x81
#: FIN, RSV1 ("this message is compressed"), text opcode.
_FIN_RSV1_TEXT = 0xC1
#: What a sync flush ends with; permessage-deflate strips it (RFC 7692 §7.2.1).
_SYNC_TAIL = b"\x00\x00\xff\xff"
#: Below this many payload bytes a message goes uncompressed (RSV1 clear): deflate
#: saves at most a few bytes there and a compressor costs more than they do.
MIN_COMPRESSED_BYTES = 64


def frame_header(length: int, first: int = _FIN_TEXT) -> bytes:
    """The header of an unmasked, final frame carrying ``length`` payload bytes."""
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


# The last text framed and its frame, as one tuple so that a reader in another
# thread never pairs one text with another's frame.
_last: tuple[str, bytes] = ("", bytes((_FIN_TEXT, 0)))


def text_frame(text: str) -> bytes:
    """The wire bytes of a server text frame for ``text``, built once per text object.

    Fan-out passes the same ``str`` object for every recipient of a broadcast, so
    an identity check against the last one built is the whole cache.
    """
    global _last
    last = _last
    if text is last[0]:
        return last[1]
    payload = text.encode()
    frame = frame_header(len(payload)) + payload
    _last = (text, frame)
    return frame


def deflated_frame(payload: bytes, window_bits: int, settings: Mapping[str, Any]) -> bytes:
    """One final text frame for ``payload``: compressed without context (RSV1 set), or
    as is when it is tiny or compression would not make it smaller."""
    if len(payload) >= MIN_COMPRESSED_BYTES:
        compressor = zlib.compressobj(wbits=-window_bits, **settings)
        body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if body.endswith(_SYNC_TAIL) and len(body) - 4 < len(payload):
            return frame_header(len(body) - 4, _FIN_RSV1_TEXT) + body[:-4]
    return frame_header(len(payload)) + payload


class SharedDeflate:
    """The compressed frame of the current broadcast for every connection that
    negotiated permessage-deflate with one window size and compressor settings.

    Built once per text object (the identity cache of :func:`text_frame`), so a
    broadcast to N such connections compresses once, not N times.
    """

    __slots__ = ("_last", "settings", "window_bits")

    def __init__(self, window_bits: int, settings: Mapping[str, Any]) -> None:
        if not 9 <= window_bits <= 15:
            raise ValueError(f"window_bits must be 9..15, not {window_bits}")
        self.window_bits = window_bits
        self.settings = dict(settings)
        self._last: tuple[str, bytes] = ("", bytes((_FIN_TEXT, 0)))

    def frame(self, text: str) -> bytes:
        """The wire bytes for ``text`` on any connection with these parameters."""
        last = self._last
        if text is last[0]:
            return last[1]
        frame = deflated_frame(text.encode(), self.window_bits, self.settings)
        self._last = (text, frame)
        return frame


#: One SharedDeflate per distinct (window bits, settings): few in practice (the
#: server's settings are fixed; clients only lower the window), never more than
#: 7 window sizes per settings.
_shared: dict[tuple[int, tuple[tuple[str, Any], ...]], SharedDeflate] = {}


def shared_deflate(window_bits: int, settings: Mapping[str, Any]) -> SharedDeflate:
    """The process-wide :class:`SharedDeflate` for these negotiated parameters."""
    key = (window_bits, tuple(sorted(settings.items())))
    found = _shared.get(key)
    if found is None:
        found = _shared[key] = SharedDeflate(window_bits, settings)
    return found
