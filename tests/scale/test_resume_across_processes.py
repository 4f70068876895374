"""Resume across processes on the real Redis: clients offline 0.5-5 s miss nothing.

Two uvicorn processes serve :mod:`tests.scale.resume_app` on one Redis prefix.
Every ``ResumingClient`` knows both URLs and takes the next one on each connect,
so each reconnect lands on the process that did not serve it before, and the
resume is answered from the shared Redis history. A publisher keeps publishing
through REST, alternating processes, while clients are dropped for 0.5-5 s
(seeded, concurrent). Then: every client received every message exactly once and
in order, and every resume said ``recovered: true``. A gap beyond the history, or
a topic whose Redis state was lost meanwhile, gets ``recovered: false`` and the
retained last values instead, never a partial replay presented as complete.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.client import Resume, ResumingClient, TopicPosition
from tests.scale.resume_app import TOPIC
from tests.scale.test_multiprocess import wait_ready
from tests.service.redis_helpers import REDIS_URL, delete_prefix, unique_prefix
from tests.support import UNIT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
KEYS = 3  # message i is retained under key i % KEYS
SEED = 6
CLIENTS = 30
WINDOW = 8.0  # seconds of publishing with clients being dropped
SHORTEST, LONGEST = 0.5, 5.0  # offline durations, seconds


@asynccontextmanager
async def two_servers(history_size: int = 1000) -> AsyncIterator[tuple[list[int], str]]:
    """Two ``resume_app`` processes on one fresh Redis prefix; yield (ports, prefix)."""
    prefix = unique_prefix()
    env = {
        **os.environ,
        "RESUME_BROKER_URL": f"{REDIS_URL}?prefix={prefix}",
        "RESUME_HISTORY_SIZE": str(history_size),
    }
    ports = [free_port(), free_port()]
    processes = []
    try:
        for port in ports:
            processes.append(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "uvicorn", "--factory"),
                    "tests.scale.resume_app:create_app",
                    *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
                    cwd=ROOT,
                    env=env,
                )
            )
        for port in ports:
            await wait_ready(port)
        yield ports, prefix
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 10 * UNIT)
            except TimeoutError:
                process.kill()
                await process.wait()
        await delete_prefix(REDIS_URL, prefix)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[list[int], str]]:
    async with two_servers() as running:
        yield running


def clients_over(ports: list[int], count: int) -> list[ResumingClient]:
    """``count`` started clients, half starting on each process, each knowing both."""
    urls = [f"ws://127.0.0.1:{port}/ws" for port in ports]
    clients = [
        ResumingClient(urls[i % 2 :] + urls[: i % 2], topics=[TOPIC], min_delay=0.05, max_delay=0.5)
        for i in range(count)
    ]
    for client in clients:
        client.start()
    return clients


async def wait_for(what: str, predicate: Any, timeout: float) -> None:
    """Poll ``predicate()`` until true; AssertionError after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}") from None


class Reader:
    """Collects what one client hands to the application."""

    def __init__(self, client: ResumingClient) -> None:
        self.client = client
        self.got: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            self.got.append(await self.client.receive())

    def values(self) -> list[int]:
        return [message["data"]["i"] for message in self.got]

    def positions(self) -> list[tuple[str, int]]:
        return [(message["epoch"], message["seq"]) for message in self.got]

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()


class Publisher:
    """Publishes ``{"i": n, "key": n % KEYS}`` for n = 0, 1, ..., alternating processes."""

    def __init__(self, http: httpx.AsyncClient, ports: list[int]) -> None:
        self.http = http
        self.ports = ports
        self.sent = 0

    async def publish(self, count: int = 1) -> None:
        for _ in range(count):
            port = self.ports[self.sent % len(self.ports)]
            answer = await self.http.post(
                f"http://127.0.0.1:{port}/publish",
                json={"i": self.sent, "key": str(self.sent % KEYS)},
            )
            assert answer.status_code == 200, answer.text
            self.sent += 1


@dataclass(frozen=True, slots=True)
class Drop:
    offline_for: float  # asked for
    reconnected_after: float  # observed: drop to new connection
    left: str  # URL before the drop
    joined: str  # URL after it
    resume: Resume


async def drop_and_resume(client: ResumingClient, offline_for: float) -> Drop:
    """Drop ``client`` for ``offline_for`` s; return once its resume was answered."""
    loop = asyncio.get_running_loop()
    left, connections, resumes = client.url, client.connections, len(client.resumes)
    started = loop.time()
    client.drop_connection(offline_for)
    deadline = offline_for + 5 * UNIT
    await wait_for("the reconnect", lambda: client.connections > connections, deadline)
    reconnected_after = loop.time() - started
    await wait_for("the resume", lambda: len(client.resumes) > resumes, 5 * UNIT)
    return Drop(offline_for, reconnected_after, left, client.url, client.resumes[resumes])


def last_value_per_key(values: range) -> list[int]:
    """The retained messages among ``values``, oldest first (as the server sends them)."""
    last = {i % KEYS: i for i in values}
    return sorted(last.values())


async def test_clients_offline_half_a_second_to_five_seconds_miss_nothing(
    servers: tuple[list[int], str],
) -> None:
    ports, _ = servers
    clients = clients_over(ports, CLIENTS)
    readers = [Reader(client) for client in clients]
    drops: list[list[Drop]] = [[] for _ in clients]
    try:
        await wait_for(
            "every client subscribed", lambda: all(TOPIC in c.positions for c in clients), 10 * UNIT
        )
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def chaos(index: int, client: ResumingClient) -> None:
            # One RNG per client: the draws do not depend on how the tasks interleave.
            rng = random.Random(SEED * 1000 + index)
            forced = {0: SHORTEST, 1: LONGEST}.get(index)  # both ends of the range happen
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            while True:
                offline = forced if forced is not None else rng.uniform(SHORTEST, LONGEST)
                forced = None
                if loop.time() - began + offline + 0.5 > WINDOW:
                    return
                drops[index].append(await drop_and_resume(client, offline))
                await asyncio.sleep(rng.uniform(0.1, 0.6))

        chaos_done = asyncio.gather(*(chaos(i, c) for i, c in enumerate(clients)))
        async with httpx.AsyncClient() as http:
            publisher = Publisher(http, ports)
            while not chaos_done.done():
                await publisher.publish()
                await asyncio.sleep(0.02)
            await chaos_done  # raises what a chaos task raised
            await publisher.publish(20)  # live again, after every resume
        total = publisher.sent
        await wait_for(
            f"{total} messages at every client",
            lambda: all(len(r.got) >= total for r in readers),
            15 * UNIT,
        )
        await asyncio.sleep(0.3 * UNIT)  # and nothing more arrives

        for index, (reader, client) in enumerate(zip(readers, clients, strict=True)):
            assert reader.values() == list(range(total)), f"client {index}: {drops[index]}"
            epochs = {epoch for epoch, _ in reader.positions()}
            seqs = [seq for _, seq in reader.positions()]
            assert len(epochs) == 1 and seqs == list(range(1, total + 1)), f"client {index}"
            assert client.duplicates_dropped == 0, f"client {index} was sent duplicates"
            assert [d.resume for d in drops[index]] == client.resumes
            assert all(resume.recovered for resume in client.resumes), f"client {index}"
            for drop in drops[index]:
                assert drop.joined != drop.left  # resumed on the other process
                assert drop.reconnected_after >= drop.offline_for  # offline as long as asked
        every = [drop for per_client in drops for drop in per_client]
        assert all(per_client for per_client in drops)  # every client was dropped
        offline = [drop.offline_for for drop in every]
        assert min(offline) <= SHORTEST + 0.1 and max(offline) >= LONGEST - 0.1
        observed = [drop.reconnected_after for drop in every]
        print(
            f"\n{total} messages, {len(every)} drops (offline {min(offline):.2f}-"
            f"{max(offline):.2f} s asked, {min(observed):.2f}-{max(observed):.2f} s observed), "
            f"{sum(len(c.resumes) for c in clients)} resumes, all recovered"
        )
    finally:
        await asyncio.gather(*(reader.close() for reader in readers))


async def test_a_gap_beyond_the_history_gets_the_last_values_not_a_partial_replay() -> None:
    history = 20
    async with two_servers(history_size=history) as (ports, _), httpx.AsyncClient() as http:
        clients = clients_over(ports, 4)
        readers = [Reader(client) for client in clients]
        try:
            await wait_for(
                "every client subscribed",
                lambda: all(TOPIC in c.positions for c in clients),
                10 * UNIT,
            )
            publisher = Publisher(http, ports)
            await publisher.publish(10)
            await wait_for("10 messages", lambda: all(len(r.got) == 10 for r in readers), 5 * UNIT)
            epoch = clients[0].positions[TOPIC].epoch

            short = [asyncio.create_task(drop_and_resume(c, SHORTEST)) for c in clients[:2]]
            long = [asyncio.create_task(drop_and_resume(c, 3.0)) for c in clients[2:]]
            await publisher.publish(5)  # within the history: recovered
            short_drops = await asyncio.gather(*short)
            await publisher.publish(history + 30)  # beyond it
            assert all(c.connections == 1 for c in clients[2:]), "long drop over too soon"
            long_drops = await asyncio.gather(*long)
            await publisher.publish(5)  # live after the resume
            total = publisher.sent  # 70
            skipped = 10 + 5 + history + 30
            retained = last_value_per_key(range(skipped))
            await wait_for(
                "every message",
                lambda: (
                    all(len(r.got) >= total for r in readers[:2])
                    and all(len(r.got) >= 10 + KEYS + 5 for r in readers[2:])
                ),
                10 * UNIT,
            )
            await asyncio.sleep(0.3 * UNIT)  # and nothing more arrives

            for reader, drop in zip(readers[:2], short_drops, strict=True):
                assert reader.values() == list(range(total))
                assert drop.resume == Resume(TOPIC, TopicPosition(epoch, 10), True)
                assert drop.joined != drop.left
            for reader, drop in zip(readers[2:], long_drops, strict=True):
                # Nothing of 10..61 (a partial replay), then 62-64, the last value per
                # key, then the live messages.
                assert reader.values() == [*range(10), *retained, *range(skipped, total)]
                assert [seq for _, seq in reader.positions()[10:]] == [
                    *(i + 1 for i in retained),
                    *range(skipped + 1, total + 1),
                ]
                assert drop.resume == Resume(TOPIC, TopicPosition(epoch, 10), False)
                assert drop.joined != drop.left
                assert reader.client.duplicates_dropped == 0
        finally:
            await asyncio.gather(*(reader.close() for reader in readers))


async def test_topic_state_lost_while_offline_gives_recovered_false_then_the_new_epoch(
    servers: tuple[list[int], str],
) -> None:
    ports, prefix = servers
    clients = clients_over(ports, 3)  # 0 moves from process 0 to 1; 1 and 2 stay
    mover = clients[0]
    readers = [Reader(client) for client in clients]
    try:
        await wait_for(
            "every client subscribed", lambda: all(TOPIC in c.positions for c in clients), 10 * UNIT
        )
        async with httpx.AsyncClient() as http:
            publisher = Publisher(http, ports)
            await publisher.publish(20)
            await wait_for("20 messages", lambda: all(len(r.got) == 20 for r in readers), 5 * UNIT)
            old = mover.positions[TOPIC]
            dropping = asyncio.create_task(drop_and_resume(mover, 1.5))
            await publisher.publish(3)  # 20-22, seq 21-23: gone with the old epoch
            async with Redis.from_url(REDIS_URL) as admin:  # e.g. Redis restarted empty
                kinds = ("epoch", "seq", "history", "retain")
                deleted = await admin.delete(*(f"{prefix}:{kind}:{{{TOPIC}}}" for kind in kinds))
            assert deleted == len(kinds)
            await publisher.publish(5)  # 23-27: a new epoch, seq 1-5
            assert mover.connections == 1, "the drop was over too soon"
            drop = await dropping
            await publisher.publish(5)  # 28-32, seq 6-10: live after the resume
        await wait_for(
            "every message",
            lambda: (
                len(readers[0].got) >= 20 + KEYS + 5 and all(len(r.got) >= 33 for r in readers[1:])
            ),
            10 * UNIT,
        )
        await asyncio.sleep(0.3 * UNIT)  # and nothing more arrives

        new = readers[1].positions()[-1][0]
        assert new != old.epoch
        for reader in readers[1:]:  # online throughout: every message, across the epochs
            assert reader.values() == list(range(33))
            assert reader.positions() == [
                *((old.epoch, seq) for seq in range(1, 24)),
                *((new, seq) for seq in range(1, 11)),
            ]
        assert drop.joined != drop.left
        assert drop.resume == Resume(TOPIC, TopicPosition(old.epoch, 20), False)
        retained = last_value_per_key(range(23, 28))  # the new epoch's, seq 3-5
        assert readers[0].values() == [*range(20), *retained, *range(28, 33)]
        # The new epoch's seqs are below the old position (20) yet none was taken for
        # a duplicate and dropped.
        assert readers[0].positions()[20:] == [
            *((new, i - 22) for i in retained),
            *((new, seq) for seq in range(6, 11)),
        ]
        assert mover.duplicates_dropped == 0
        assert mover.positions[TOPIC] == TopicPosition(new, 10)
    finally:
        await asyncio.gather(*(reader.close() for reader in readers))
