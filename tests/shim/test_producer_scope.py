"""Two workers on one Redis: a stage never changes who receives an old producer's event.

Two shims, each over its own service and uvicorn server in this process, share a
Redis prefix, as two ``--workers`` of one app do. Each worker has an old-protocol
and an envelope client. At every stage:

- a ``CLUSTER`` broadcast (triggered once, in one worker) reaches all four
  clients exactly once, in order, whichever worker produced it: the other
  worker's legacy side delivers it to its legacy-routed clients;
- a ``WORKER`` broadcast (a loop every worker runs) reaches only the producing
  worker's clients, so it is not multiplied by the number of workers at ``new``;
- at ``shadow`` the other worker's differ compares what its two sides delivered
  and finds nothing unexpected.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import pytest
from websockets.asyncio.client import ClientConnection

from shim import ProducerScope, Stage
from tests.scale.test_multiprocess import delete_keys
from tests.shim.stage_support import (
    ShimServer,
    event_number,
    eventually,
    progress_event,
    read_frames,
    shim_server,
)
from tests.support import UNIT, connect, receive_json

pytestmark = [pytest.mark.integration, pytest.mark.redis]

EVENTS = 5


@asynccontextmanager
async def two_workers(
    stage: Stage, scope: ProducerScope | None
) -> AsyncIterator[tuple[list[ShimServer], list[list[ClientConnection]]]]:
    """Two workers on one Redis prefix, each with an old and an envelope client."""
    prefix = f"test-scope-{uuid.uuid4().hex[:8]}"
    broker = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    try:
        async with AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    shim_server(stage, producer_scope=scope, broker=broker)
                )
                for _ in range(2)
            ]
            clients: list[list[ClientConnection]] = []
            for worker in workers:
                old = await stack.enter_async_context(connect(worker.ws, compression=None))
                new = await stack.enter_async_context(
                    connect(f"{worker.ws}?format=envelope", compression=None)
                )
                hello = await receive_json(new)
                assert hello["type"] == "connection_established", hello
                clients.append([old, new])
            for worker in workers:
                assert await eventually(partial(connected, worker, 2))
            await asyncio.sleep(0.5 * UNIT)  # both workers' Redis subscriptions are confirmed
            yield workers, clients
    finally:
        delete_keys(prefix)


def connected(worker: ShimServer, count: int) -> bool:
    return bool(worker.manager.stats()["connections"] == count)


async def numbers(ws: ClientConnection, count: int) -> list[int]:
    return [event_number(frame) for frame in await read_frames(ws, count, quiet=0.5)]


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_once_triggered_broadcast_reaches_every_workers_clients_once(
    stage: Stage,
) -> None:
    async with two_workers(stage, ProducerScope.CLUSTER) as (workers, clients):
        everyone = [ws for pair in clients for ws in pair]
        for producer, first in ((workers[0], 0), (workers[1], EVENTS)):
            for i in range(first, first + EVENTS):
                await producer.manager.broadcast(progress_event(i))
            batch = list(range(first, first + EVENTS))
            assert [await numbers(ws, EVENTS) for ws in everyone] == [batch] * len(everyone)
        if stage is Stage.SHADOW:
            for worker in workers:
                worker.manager.differ.flush(force=True)
                counts = worker.manager.differ.counters()["/ws"]
                assert worker.manager.differ.unexpected_total == 0, worker.manager.differ.recent()
                assert counts["matched"] >= 2 * 2 * EVENTS  # both clients, both producers
                assert counts.get("expected", 0) == 0


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_per_worker_producer_is_not_multiplied_at_any_stage(stage: Stage) -> None:
    async with two_workers(stage, None) as (workers, clients):  # WORKER, the default
        for index, worker in enumerate(workers):
            for i in range(EVENTS):
                await worker.manager.broadcast(progress_event(100 * index + i))
        for index, pair in enumerate(clients):
            expected = [100 * index + i for i in range(EVENTS)]
            assert [await numbers(ws, EVENTS) for ws in pair] == [expected, expected]


async def test_a_per_call_scope_overrides_the_managers() -> None:
    async with two_workers(Stage.NEW, ProducerScope.WORKER) as (workers, clients):
        await workers[0].manager.broadcast(progress_event(7), producer_scope=ProducerScope.CLUSTER)
        everyone = [ws for pair in clients for ws in pair]
        assert [await numbers(ws, 1) for ws in everyone] == [[7]] * len(everyone)


@pytest.mark.parametrize(
    ("before", "after"), [(Stage.NEW, Stage.LEGACY), (Stage.LEGACY, Stage.NEW)]
)
async def test_a_flip_never_darkens_the_other_worker(before: Stage, after: Stage) -> None:
    async with two_workers(before, ProducerScope.CLUSTER) as (workers, clients):
        everyone = [ws for pair in clients for ws in pair]
        await workers[0].manager.broadcast(progress_event(1))
        assert [await numbers(ws, 1) for ws in everyone] == [[1]] * len(everyone)
        for worker in workers:
            await worker.flip(after)
        await workers[0].manager.broadcast(progress_event(2))
        assert [await numbers(ws, 1) for ws in everyone] == [[2]] * len(everyone)
