"""Brokers, chosen by URL: ``memory://`` (default) or ``redis://host:port/db``."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, History, Publication, PublicationHandler
from .memory import MemoryBroker

__all__ = ["Broker", "History", "MemoryBroker", "Publication", "PublicationHandler", "from_url"]


def from_url(url: str) -> Broker:
    """Create the broker a URL names; the Redis one is imported only when asked for.

    Raises ValueError for an unknown scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme in ("", "memory"):
        return MemoryBroker()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker  # lazy: redis-py is an optional dependency

        broker: Broker = RedisBroker(url)
        return broker
    raise ValueError(f"unknown broker URL scheme {scheme!r} (use memory:// or redis://)")
