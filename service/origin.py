"""The ``Origin`` allow-list for browser clients, sans I/O.

CORS middleware does not cover WebSockets: a browser opens a WebSocket to any
host and sends the page's cookies along, so the only defence against a hostile
page (cross-site WebSocket hijacking) is the server refusing handshakes whose
``Origin`` is not one it trusts. Origins are compared exactly, after
normalisation (:func:`normalize_origin`): scheme and host lower-cased, a default
port dropped, a trailing ``/`` ignored. Suffix tricks
(``https://example.com.evil.org``), userinfo (``https://example.com@evil.org``),
paths, the opaque origin ``null`` and repeated headers never match.

Non-browser clients send no ``Origin`` at all; whether that is allowed is a
separate switch, because a browser always sends one on a WebSocket handshake.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
_IPV6 = re.compile(r"[0-9a-f:.]+")


def normalize_origin(value: str) -> str | None:
    """Return ``scheme://host[:port]`` in canonical form, or ``None`` if not a valid origin.

    ``None`` for: ``null`` (an opaque origin: sandboxed frames, ``file:``, some
    redirects), userinfo, a path other than ``/``, a query, a fragment, an empty
    or malformed host, a bad port, and anything with whitespace or backslashes
    inside. Internationalised host names are converted to their ASCII form.
    """
    text = value.strip(" \t")
    if not text or text.lower() == "null" or any(c in text for c in " \t\r\n\\%"):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if _SCHEME.fullmatch(scheme) is None or not parts.netloc or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        return None
    raw_host = parts.hostname
    if not raw_host:
        return None
    if parts.netloc.startswith("["):
        if _IPV6.fullmatch(raw_host) is None:
            return None
        host = f"[{raw_host}]"
    else:
        try:
            host = raw_host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
        if _HOST.fullmatch(host) is None:
            return None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which ``Origin`` values may open a WebSocket.

    Build it with :meth:`create`; :meth:`check` takes the header's values as sent
    (zero, one or several) and returns ``None`` to admit or the reason to refuse.
    """

    allowed: frozenset[str]
    allow_missing: bool = True

    @classmethod
    def create(cls, allowed: Iterable[str], *, allow_missing: bool = True) -> OriginPolicy:
        """Normalise the allow-list; raises ValueError for an entry that is not an origin.

        ``*`` and ``null`` are rejected on purpose: to allow every origin, pass
        ``allowed_origins=None`` to the service instead.
        """
        if isinstance(allowed, str):
            raise ValueError("allowed origins must be a collection of origins, not one string")
        normalised = set()
        for entry in allowed:
            origin = normalize_origin(entry)
            if origin is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {entry!r}")
            normalised.add(origin)
        return cls(frozenset(normalised), allow_missing)

    def check(self, values: Sequence[str]) -> str | None:
        """Return ``None`` if a handshake with these ``Origin`` values may proceed, else why not."""
        if not values:
            return None if self.allow_missing else "origin required"
        if len(values) > 1:
            return "origin not allowed"
        origin = normalize_origin(values[0])
        if origin is None or origin not in self.allowed:
            return "origin not allowed"
        return None
