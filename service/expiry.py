"""When authenticated connections must close because their credentials expire.

A token is checked once, at connect; without this, a connection would outlive its
token by hours. :class:`CredentialDeadlines` keeps, per authenticated connection,
the socket it authenticated with (an ``auth`` refresh is verified against it) and
one ``loop.call_at`` timer for its deadline. Timers are loop handles, not tasks,
so ten thousand idle connections cost ten thousand small handles and no
scheduling; nothing here runs on the broadcast path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["CredentialDeadlines"]

C = TypeVar("C")


class _Entry(Generic[C]):
    __slots__ = ("connection", "expires_at", "timer", "websocket")

    def __init__(self, connection: C, websocket: Any) -> None:
        self.connection = connection
        self.websocket = websocket
        self.expires_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class CredentialDeadlines(Generic[C]):
    """Deadlines (Unix seconds) of connections keyed by id; ``on_expired(connection)``
    is called from the loop when one passes.

    ``clock`` is wall-clock time (deadlines come from tokens' ``exp``); the timer
    itself is set on the loop's monotonic clock.
    """

    def __init__(
        self, on_expired: Callable[[C], None], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._on_expired = on_expired
        self._clock = clock
        self._entries: dict[str, _Entry[C]] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._entries

    def track(
        self, connection_id: str, connection: C, websocket: Any, expires_at: float | None
    ) -> None:
        """Start tracking a connection that authenticated on ``websocket``."""
        self._entries[connection_id] = _Entry(connection, websocket)
        self.move(connection_id, expires_at)

    def move(self, connection_id: str, expires_at: float | None) -> None:
        """(Re)arm the one timer of ``connection_id`` (``None``: no deadline)."""
        entry = self._entries[connection_id]
        entry.cancel()
        entry.expires_at = expires_at
        if expires_at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, expires_at - self._clock())
        entry.timer = loop.call_at(loop.time() + delay, self._on_expired, entry.connection)

    def expires_at(self, connection_id: str) -> float | None:
        entry = self._entries.get(connection_id)
        return None if entry is None else entry.expires_at

    def websocket(self, connection_id: str) -> Any | None:
        """The socket ``connection_id`` authenticated on (``None``: not tracked)."""
        entry = self._entries.get(connection_id)
        return None if entry is None else entry.websocket

    def timer(self, connection_id: str) -> asyncio.TimerHandle | None:
        entry = self._entries.get(connection_id)
        return None if entry is None else entry.timer

    def is_due(self, connection_id: str) -> bool:
        """True once the deadline has passed, even if its timer has not run yet."""
        entry = self._entries.get(connection_id)
        return (
            entry is not None and entry.expires_at is not None and self._clock() >= entry.expires_at
        )

    def forget(self, connection_id: str) -> None:
        """Stop tracking ``connection_id`` and cancel its timer; unknown ids are ignored."""
        entry = self._entries.pop(connection_id, None)
        if entry is not None:
            entry.cancel()
