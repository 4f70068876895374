"""The broker interface: how a publication gets from any process to every process.

Every broadcast goes through a broker and comes back through its handler, even in
one process (the memory broker is a loopback), so local and multi-process delivery
are the same code path.

Guarantees every broker gives:

- **At most once** to the handler, per publication and process; a broker never
  invents or duplicates a publication.
- **Order per topic**: publications of one topic reach the handler in the order
  the broker assigned their ``seq``; across topics nothing is promised.
- **Sequence**: each publication carries ``seq`` (1, 2, 3, ... per topic) and the
  topic's ``epoch``. The epoch changes when the broker lost the topic's history
  (a restart of the memory broker, a wiped Redis), so ``(epoch, seq)`` names a
  position that either exists or is known to be gone.
- **Subscriptions** are per process and reference-counted by the caller: the hub
  subscribes a topic when it gains its first local subscriber and unsubscribes
  when it loses its last; a broker only delivers topics it is subscribed to.
- **On reconnect** (after a backend outage) a broker resubscribes its topics by
  itself and catches up: what was published meanwhile and is still in the
  history reaches the handler, in order, before newer publications, and nothing
  twice. Where the history cannot cover the gap (the epoch changed, or it was
  trimmed), the broker calls the gap handler with the topic instead, so nobody
  mistakes a hole for a complete stream.
- **Failing fast**: ``publish`` raises :class:`~service.errors.BrokerUnavailable`
  instead of waiting when the backend is down.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Broker", "GapHandler", "History", "Publication", "PublicationHandler"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One published message as the broker hands it back.

    ``payload`` is the encoded envelope without ``seq``/``epoch``; the hub splices
    them in once per process (:func:`service.messages.with_sequence`).
    """

    topic: str
    payload: bytes
    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class History:
    """The answer to "what did I miss on this topic since (epoch, seq)?".

    ``complete`` is False when the epoch changed or the history no longer reaches
    back that far; then ``publications`` is empty rather than a partial replay.
    """

    complete: bool
    publications: Sequence[Publication]
    epoch: str
    seq: int


PublicationHandler = Callable[[Publication], None]

#: Called with a topic whose publications may have been missed and cannot be replayed.
GapHandler = Callable[[str], None]


class Broker(ABC):
    """Carries encoded publications between processes (see the module docstring)."""

    _gap_handler: GapHandler | None = None

    @abstractmethod
    async def connect(self, handler: PublicationHandler) -> None:
        """Start delivering subscribed topics' publications to ``handler``.

        ``handler`` is called on the event loop, synchronously, and must not block.
        """

    def set_gap_handler(self, handler: GapHandler | None) -> None:
        """Call ``handler(topic)`` when a reconnect left a gap the history cannot fill.

        A broker that never loses publications (the memory loopback) never calls it.
        """
        self._gap_handler = handler

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop delivering and release the backend; safe to call twice."""

    @abstractmethod
    async def subscribe(self, topic: str) -> None:
        """Deliver ``topic``'s publications to the handler from now on."""

    @abstractmethod
    async def unsubscribe(self, topic: str) -> None:
        """Stop delivering ``topic``; unknown topics are ignored."""

    @abstractmethod
    async def publish(self, topic: str, payload: bytes, *, retain_key: str | None = None) -> int:
        """Assign the next ``seq`` of ``topic``, store and deliver it; return ``seq``.

        With ``retain_key`` the publication also becomes the topic's last value for
        that key (see :meth:`last_values`).
        """

    @abstractmethod
    async def last_values(self, topic: str) -> list[Publication]:
        """Return the latest retained publication per key of ``topic``, oldest first."""

    async def forget_value(self, topic: str, key: str) -> None:
        """Drop the value retained under ``key`` of ``topic`` (unknown keys: no-op).

        Retained values live until replaced; an app whose keys come and go (a
        session id per training run) forgets each key when the thing it names
        is gone, so what the broker keeps stays bounded.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot forget retained values")

    @abstractmethod
    async def history(self, topic: str, *, epoch: str, since_seq: int) -> History:
        """Return the publications of ``topic`` after ``since_seq`` in ``epoch``."""

    @abstractmethod
    async def position(self, topic: str) -> tuple[str, int]:
        """Return the topic's current ``(epoch, last seq)`` (seq 0 when none yet)."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """True while the backend is reachable."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters and health for ``WebSocketService.stats()`` and metrics."""
