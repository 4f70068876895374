"""Brokers, chosen by URL: ``memory://`` (default) or ``redis://host:port/db``.

Both take the per-topic history bounds as query parameters, e.g.
``redis://127.0.0.1:6379/0?prefix=ws&history_size=5000&history_ttl=600`` (messages,
seconds; defaults 1000 and 300); Redis also takes ``prefix`` (its keys' namespace).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import Broker, History, Publication, PublicationHandler
from .memory import MemoryBroker

__all__ = ["Broker", "History", "MemoryBroker", "Publication", "PublicationHandler", "from_url"]


def from_url(url: str) -> Broker:
    """Create the broker a URL names; the Redis one is imported only when asked for.

    Raises ValueError for an unknown scheme or a malformed history bound.
    """
    url, history = _split_history(url)
    scheme = urlsplit(url).scheme
    if scheme in ("", "memory"):
        return MemoryBroker(**history)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker  # lazy: redis-py is an optional dependency

        broker: Broker = RedisBroker(url, **history)
        return broker
    raise ValueError(f"unknown broker URL scheme {scheme!r} (use memory:// or redis://)")


_HISTORY_PARAMETERS = {"history_size": int, "history_ttl": float}


def _split_history(url: str) -> tuple[str, dict[str, Any]]:
    """Remove the history bounds from ``url``'s query; return (url, keyword arguments)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    bounds: dict[str, Any] = {}
    for name, value in query:
        if name in _HISTORY_PARAMETERS:
            try:
                bounds[name] = _HISTORY_PARAMETERS[name](value)
            except ValueError:
                raise ValueError(f"broker URL: {name} must be a number, got {value!r}") from None
    if not bounds:
        return url, bounds
    rest = urlencode([(name, value) for name, value in query if name not in _HISTORY_PARAMETERS])
    return urlunsplit(parts._replace(query=rest)), bounds
