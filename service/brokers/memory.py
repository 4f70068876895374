"""The in-process loopback broker: the default, and the reference for the others.

``publish`` delivers to the handler synchronously before it returns, so with this
broker a ``broadcast`` has reached every healthy local socket when it returns.
The history is a bounded per-topic ring (by count and age); the epoch is random
per broker instance, so a restarted process tells resuming clients that its
history is gone.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .base import Broker, History, Publication, PublicationHandler

__all__ = ["MemoryBroker"]


class _TopicState:
    __slots__ = ("history", "retained", "seq")

    def __init__(self, history_size: int) -> None:
        self.seq = 0
        self.history: deque[tuple[float, Publication]] = deque(maxlen=history_size)
        self.retained: dict[str, Publication] = {}


class MemoryBroker(Broker):
    """Loopback broker for one process.

    ``history_size`` publications per topic are kept for at most ``history_ttl``
    seconds (``0`` keeps none: every resume is incomplete).
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._clock = clock
        self._epoch = secrets.token_hex(4)
        self._topics: dict[str, _TopicState] = {}
        self._subscribed: set[str] = set()
        self._handler: PublicationHandler | None = None
        self._published = 0

    async def connect(self, handler: PublicationHandler) -> None:
        self._handler = handler

    async def disconnect(self) -> None:
        self._handler = None
        self._subscribed.clear()

    async def subscribe(self, topic: str) -> None:
        self._subscribed.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self._subscribed.discard(topic)

    def _state(self, topic: str) -> _TopicState:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _TopicState(self._history_size)
        return state

    async def publish(self, topic: str, payload: bytes, *, retain_key: str | None = None) -> int:
        state = self._state(topic)
        state.seq += 1
        publication = Publication(topic, payload, state.seq, self._epoch)
        if self._history_size:
            state.history.append((self._clock(), publication))
        if retain_key is not None:
            state.retained.pop(retain_key, None)
            state.retained[retain_key] = publication
        self._published += 1
        if self._handler is not None and topic in self._subscribed:
            self._handler(publication)
        return state.seq

    async def forget_value(self, topic: str, key: str) -> None:
        state = self._topics.get(topic)
        if state is not None:
            state.retained.pop(key, None)

    async def last_values(self, topic: str) -> list[Publication]:
        state = self._topics.get(topic)
        return [] if state is None else list(state.retained.values())

    async def position(self, topic: str) -> tuple[str, int]:
        state = self._topics.get(topic)
        return self._epoch, 0 if state is None else state.seq

    async def history(self, topic: str, *, epoch: str, since_seq: int) -> History:
        state = self._state(topic)
        if epoch != self._epoch or since_seq > state.seq or since_seq < 0:
            return History(False, (), self._epoch, state.seq)
        if since_seq == state.seq:
            return History(True, (), self._epoch, state.seq)
        horizon = self._clock() - self._history_ttl
        kept = [pub for stamp, pub in state.history if stamp >= horizon]
        missed = [pub for pub in kept if pub.seq > since_seq]
        if not missed or missed[0].seq != since_seq + 1:
            return History(False, (), self._epoch, state.seq)
        return History(True, missed, self._epoch, state.seq)

    @property
    def healthy(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "kind": "memory",
            "healthy": True,
            "epoch": self._epoch,
            "published": self._published,
            "subscribed_topics": len(self._subscribed),
        }
