"""What the access rules need from a WebSocket upgrade request, sans I/O.

:class:`Handshake` is a plain snapshot of the request (headers, offered
subprotocols, query string, client address) built from an ASGI scope, so origin
checks, token extraction and connection counting are tested with data in, data
out. Nothing here imports Starlette or touches a socket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["ENVELOPE_SUBPROTOCOL", "TOKEN_SUBPROTOCOL_PREFIX", "Handshake", "select_subprotocol"]

#: The subprotocol a client speaking the standardized envelope offers.
ENVELOPE_SUBPROTOCOL = "envelope.v1"

#: Prefix of the subprotocol entry that carries a bearer token (``bearer.<token>``);
#: browsers cannot set an ``Authorization`` header on a WebSocket, but can offer this.
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


@dataclass(frozen=True, slots=True)
class Handshake:
    """One upgrade request: header values by lower-case name, in order of arrival."""

    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()
    query_string: str = ""
    client_host: str | None = None
    path: str = "/"

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Handshake:
        """Build from an ASGI ``websocket`` scope (raw headers are latin-1 bytes)."""
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = _text(raw_name).lower()
            headers.setdefault(name, []).append(_text(raw_value))
        client = scope.get("client")
        host = None
        if isinstance(client, Sequence) and not isinstance(client, str) and client:
            host = str(client[0])
        return cls(
            headers={name: tuple(values) for name, values in headers.items()},
            subprotocols=tuple(str(p) for p in scope.get("subprotocols", ())),
            query_string=_text(scope.get("query_string", b"")),
            client_host=host,
            path=str(scope.get("path", "/")),
        )

    @classmethod
    def of(cls, websocket: Any) -> Handshake:
        """Build from anything with an ASGI ``scope`` (Starlette's WebSocket); else empty.

        A socket double without a scope gives an empty handshake: no headers, no
        client address, so only rules that allow missing data let it in.
        """
        scope = getattr(websocket, "scope", None)
        return cls.from_scope(scope) if isinstance(scope, Mapping) else cls()

    def header(self, name: str) -> str | None:
        """The value of a header sent exactly once, else ``None`` (absent or repeated)."""
        values = self.headers.get(name.lower(), ())
        return values[0] if len(values) == 1 else None

    def header_count(self, name: str) -> int:
        return len(self.headers.get(name.lower(), ()))

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name`` (percent-decoded), else ``None``."""
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            if key == name:
                return value
        return None


def select_subprotocol(
    offered: Sequence[str], supported: Sequence[str] = (ENVELOPE_SUBPROTOCOL,)
) -> str | None:
    """Return the first offered subprotocol the server speaks, else ``None``.

    A credential-carrying entry (``bearer.<token>``) is never selected, whatever
    ``supported`` says: the accepted subprotocol is echoed in the response headers
    and would leak the token into proxies' and browsers' logs.
    """
    for protocol in offered:
        if protocol.lower().startswith(TOKEN_SUBPROTOCOL_PREFIX):
            continue
        if protocol in supported:
            return protocol
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return str(value)
