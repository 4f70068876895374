"""Redis for integration tests: the shared server under a unique prefix, or our own.

The shared server (``WS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``) is
never flushed: each test writes under its own prefix and deletes it afterwards.
Fault tests start their own ``redis-server`` on a free port instead, to kill,
pause and restart it. Timeouts are multiples of :data:`tests.support.UNIT`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from contextlib import suppress

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.brokers import Publication
from tests.support import UNIT, free_port

__all__ = ["REDIS_URL", "Collector", "RedisServer", "delete_prefix", "unique_prefix", "wait_until"]

REDIS_URL = os.environ.get("WS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (and nothing else)."""
    async with Redis.from_url(url) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.unlink(*keys)


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` units."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * UNIT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout * UNIT}s waiting for {what}")
        await asyncio.sleep(0.005)


class Collector:
    """A broker handler that records what it is given."""

    def __init__(self) -> None:
        self.received: list[Publication] = []

    def __call__(self, publication: Publication) -> None:
        self.received.append(publication)

    def of(self, topic: str) -> list[Publication]:
        return [p for p in self.received if p.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [p.payload for p in self.of(topic)]

    async def wait_for(self, count: int, timeout: float = 2.0) -> None:
        """Wait until at least ``count`` publications arrived."""
        await wait_until(lambda: len(self.received) >= count, timeout, f"{count} publications")


class RedisServer:
    """A ``redis-server`` of our own on a free port, without persistence.

    ``kill`` then ``start`` is a Redis restart that loses every key, like a
    crashed cache; ``pause``/``resume`` freeze it with its sockets open.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with Redis.from_url(self.url) as client:
            for _ in range(int(500 * UNIT)):
                with suppress(RedisConnectionError, OSError):  # still booting
                    if await client.ping():
                        return
                await asyncio.sleep(0.01)
        raise AssertionError(f"redis-server on port {self.port} did not start")

    async def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    async def kill_pubsub_clients(self) -> int:
        """``CLIENT KILL TYPE pubsub``; return how many connections it closed."""
        async with Redis.from_url(self.url) as client:
            return await client.client_kill_filter(_type="pubsub")
