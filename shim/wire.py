"""Which wire format a client speaks: its choice, announced at the handshake.

A client that speaks the standardized envelope says so with the WebSocket
subprotocol ``envelope.v1`` (``new WebSocket(url, ["envelope.v1"])``) or, where it
cannot set subprotocols, the query parameter ``?format=envelope``. Every other
client is an old client and gets old payload shapes, whichever side serves it.

An old client may offer the marker subprotocol ``legacy.v1``: it stays on the
old payloads, and the shim echoes the marker. That is what lets a browser send a
token: ``new WebSocket(url, ["legacy.v1", "bearer." + token])`` needs the server
to accept one offered subprotocol (a browser fails a handshake that accepts
none), and the ``bearer.<token>`` entry itself is never echoed. Offer it only to
a backend that runs the shim: the legacy manager accepts no subprotocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

__all__ = [
    "ENVELOPE_SUBPROTOCOL",
    "FORMAT_QUERY_PARAM",
    "LEGACY_SUBPROTOCOL",
    "WireFormat",
    "negotiate",
]

ENVELOPE_SUBPROTOCOL = "envelope.v1"
#: Marker an old-protocol client offers so that the handshake can echo something.
LEGACY_SUBPROTOCOL = "legacy.v1"
FORMAT_QUERY_PARAM = "format"


class WireFormat(StrEnum):
    LEGACY = "legacy"  #: old ad-hoc payloads, as the legacy manager sent them
    ENVELOPE = "envelope"  #: standardized ``WebSocketMessage`` envelopes


def negotiate(
    offered_subprotocols: Sequence[str], query: Mapping[str, str]
) -> tuple[WireFormat, str | None]:
    """Return the client's format and the subprotocol to accept (``None``: none).

    ``envelope.v1`` wins over ``legacy.v1`` when both are offered, and a
    subprotocol wins over the query parameter; an unknown ``format`` value is
    treated as legacy (old clients never send it).
    """
    if ENVELOPE_SUBPROTOCOL in offered_subprotocols:
        return WireFormat.ENVELOPE, ENVELOPE_SUBPROTOCOL
    if LEGACY_SUBPROTOCOL in offered_subprotocols:
        return WireFormat.LEGACY, LEGACY_SUBPROTOCOL
    if query.get(FORMAT_QUERY_PARAM, "").lower() == WireFormat.ENVELOPE:
        return WireFormat.ENVELOPE, None
    return WireFormat.LEGACY, None
