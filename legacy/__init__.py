"""The legacy side: the old embedded ``WebSocketManager`` and its ad-hoc payloads.

This package is the reference behaviour the migration is measured against:
:mod:`legacy.manager` is the manager FastAPI backends embed, :mod:`legacy.producers`
the functions that broadcast through it, :mod:`legacy.catalogue` one named example
of every payload shape they send. Nothing here imports the new service or the shim.
"""

from .manager import NaiveWebSocketManager, WebSocketLike, WebSocketManager

__all__ = ["NaiveWebSocketManager", "WebSocketLike", "WebSocketManager"]
