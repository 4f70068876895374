"""A Python client for the service's protocol that survives reconnects without silent gaps.

``ResumingClient`` connects, subscribes to its topics, answers heartbeats and, when
the connection drops, reconnects with jittered exponential backoff and
resubscribes with the last ``(epoch, seq)`` it saw per topic. The server then
replays exactly what was missed (``subscribed`` with ``recovered: true``) or says
it cannot (``recovered: false``, e.g. the gap is older than the history or the
broker lost it); each outcome is recorded in :attr:`ResumingClient.resumes`.
Frames at or below the last seen ``seq`` of the same epoch are dropped, so a
message never reaches the application twice::

    async with ResumingClient("ws://127.0.0.1:8000/ws", topics=["training"]) as client:
        async for message in client:
            ...

Given several URLs (the processes behind a load balancer, say), each connection
attempt takes the next one, so a reconnect lands on another process and resumes
there; that works when they share a broker (Redis).

Needs the ``websockets`` package (the ``client`` extra).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

__all__ = ["Resume", "ResumingClient", "TopicPosition"]


@dataclass(frozen=True, slots=True)
class TopicPosition:
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Resume:
    """The outcome of one resubscription after a reconnect."""

    topic: str
    requested: TopicPosition | None
    recovered: bool


class ResumingClient:
    """Reconnecting, resuming client; iterate it for application messages (dicts).

    ``url`` is one ``ws://`` URL or several, tried in turn: connection attempt
    *n* uses ``urls[n % len(urls)]``, and :attr:`url` is the one of the current
    (or latest) attempt. Keyword-only options: ``topics`` to subscribe,
    ``subprotocols`` offered (the envelope protocol by default), backoff bounds
    ``min_delay``/``max_delay`` in seconds, and ``max_attempts`` consecutive
    failed connects before giving up (``None``: never). Raises ValueError for an
    empty list of URLs.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        topics: Iterable[str] = (),
        subprotocols: Iterable[str] = ("envelope.v1",),
        min_delay: float = 0.1,
        max_delay: float = 5.0,
        max_attempts: int | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("ResumingClient needs at least one URL")
        self.url = self.urls[0]
        self.topics = list(topics)
        self.subprotocols = list(subprotocols)
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.positions: dict[str, TopicPosition] = {}
        self.resumes: list[Resume] = []
        self.connections = 0
        self.duplicates_dropped = 0
        self._retained_window: set[str] = set()
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue(10_000)
        self._task: asyncio.Task[None] | None = None
        self._socket: Any = None
        self._closing = False
        self._attempts = 0
        self._offline_until = 0.0  # event loop time; see drop_connection

    async def __aenter__(self) -> ResumingClient:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop reconnecting and close the current connection."""
        self._closing = True
        if self._socket is not None:
            await self._socket.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def drop_connection(self, offline_for: float = 0.0) -> None:
        """Abort the TCP connection without a close frame (tests and chaos drills).

        The next connection attempt starts no sooner than ``offline_for`` seconds
        from now, and the usual jittered backoff comes on top; messages published
        meanwhile are what the resume must deliver. Works while disconnected too
        (it only delays the next attempt then). Must be called on the client's
        event loop.
        """
        if offline_for > 0:
            self._offline_until = asyncio.get_running_loop().time() + offline_for
        if self._socket is not None:
            self._socket.transport.abort()

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """Next application message; raises what ended the client, or TimeoutError."""
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.receive()

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed
        from websockets.typing import Subprotocol

        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            # Also here, not only after the backoff: a drop may come during the backoff.
            if (offline := self._offline_until - loop.time()) > 0:
                await asyncio.sleep(offline)
            self.url = self.urls[self._attempts % len(self.urls)]
            self._attempts += 1
            try:
                async with connect(
                    self.url, subprotocols=[Subprotocol(p) for p in self.subprotocols]
                ) as socket:
                    self._socket = socket
                    self.connections += 1
                    failures = 0
                    await self._subscribe_all(socket, resuming=self.connections > 1)
                    async for raw in socket:
                        await self._handle(socket, raw)
            except (OSError, ConnectionClosed, TimeoutError):
                failures += 1
            finally:
                self._socket = None
            if self._closing:
                return
            if self.max_attempts is not None and failures >= self.max_attempts:
                await self._queue.put(ConnectionError(f"gave up after {failures} attempts"))
                return
            ceiling = min(self.max_delay, self.min_delay * 2 ** min(failures, 16))
            offline = max(0.0, self._offline_until - loop.time())
            await asyncio.sleep(offline + ceiling / 2 + random.random() * ceiling / 2)

    async def _subscribe_all(self, socket: Any, *, resuming: bool) -> None:
        for topic in self.topics:
            data: dict[str, Any] = {"topic": topic}
            position = self.positions.get(topic)
            if resuming and position is not None:
                data["resume"] = {"epoch": position.epoch, "seq": position.seq}
            frame = {"type": "subscribe", "data": data, "id": topic}
            await socket.send(orjson.dumps(frame).decode())

    async def _handle(self, socket: Any, raw: str | bytes) -> None:
        message = orjson.loads(raw)
        kind = message.get("type")
        if kind == "heartbeat":
            await socket.send('{"type":"pong"}')
            return
        if kind == "subscribed":
            self._on_subscribed(message.get("data") or {})
            return
        if kind in ("connection_established", "unsubscribed", "pong"):
            return
        topic, seq, epoch = message.get("topic"), message.get("seq"), message.get("epoch")
        if isinstance(topic, str) and isinstance(seq, int) and isinstance(epoch, str):
            last = self.positions.get(topic)
            if last is not None and last.epoch == epoch and seq <= last.seq:
                if topic not in self._retained_window:
                    self.duplicates_dropped += 1
                    return
                # A retained last value, older than where the subscription starts.
            else:
                self._retained_window.discard(topic)
                self.positions[topic] = TopicPosition(epoch, seq)
        await self._queue.put(message)

    def _on_subscribed(self, data: dict[str, Any]) -> None:
        topic = data.get("topic")
        if not isinstance(topic, str):
            return
        if "recovered" in data:
            self.resumes.append(
                Resume(topic, self.positions.get(topic), bool(data.get("recovered")))
            )
        epoch, seq = data.get("epoch"), data.get("seq")
        if data.get("recovered"):
            self._retained_window.discard(topic)
        elif isinstance(epoch, str) and isinstance(seq, int):
            # A fresh start or an unrecoverable gap: the subscription starts at the
            # position the server names (a drop before the first message resumes from
            # there); the retained last values that follow are older, and welcome.
            self.positions[topic] = TopicPosition(epoch, seq)
            self._retained_window.add(topic)
        else:
            self.positions.pop(topic, None)
