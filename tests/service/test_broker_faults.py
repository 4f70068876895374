"""End to end through broker faults: clients see no silent gap.

Two services (two "processes") share a private redis-server; WebSocket clients of
the subscribing one keep their connections while the publishing one keeps
publishing. Subscriber connections killed 20 times: the broker catches up from
the history, so every client gets every accepted publication once, in order.
Redis restarted (all keys lost): publishes fail fast meanwhile, and clients get an
explicit ``recovered: false`` before the new epoch's messages.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

from service import MessageType, WebSocketMessage, WebSocketService
from service.asgi import serve
from service.brokers.redis import RedisBroker
from service.client import ResumingClient
from service.errors import BrokerError
from tests.service.redis_helpers import RedisServer
from tests.support import UNIT, running_server

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def app_for(service: WebSocketService) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket)

    return app


def service_on(server: RedisServer) -> WebSocketService:
    broker = RedisBroker(server.url, reconnect_backoff=(0.02, 0.2), publish_timeout=0.5)
    return WebSocketService(broker=broker, heartbeat_interval=None)


async def publish_accepted(publisher: WebSocketService, i: int) -> bool:
    """Publish ``i``; True if the broker accepted it (False: it failed fast)."""
    started = time.monotonic()
    try:
        await publisher.broadcast(
            WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": i}), topic="training"
        )
    except BrokerError:
        assert time.monotonic() - started < 3 * UNIT, "a publish during an outage hung"
        return False
    return True


async def clients_for(url: str, count: int) -> list[ResumingClient]:
    clients = [ResumingClient(f"{url}/ws", topics=["training"]) for _ in range(count)]
    for client in clients:
        client.start()
    return clients


async def received(client: ResumingClient, count: int) -> list[int]:
    got: list[int] = []
    async with asyncio.timeout(15 * UNIT):
        while len(got) < count:
            got.append((await client.receive())["data"]["i"])
    return got


async def settle_subscriptions(service: WebSocketService, count: int) -> None:
    async with asyncio.timeout(10 * UNIT):
        while service.stats()["subscriptions"] < count:
            await asyncio.sleep(0.01)


async def test_subscriber_connections_killed_20_times_lose_nothing(
    redis_server: RedisServer,
) -> None:
    subscriber, publisher = service_on(redis_server), service_on(redis_server)
    await subscriber.start()
    await publisher.start()
    async with running_server(app_for(subscriber)) as url:
        clients = await clients_for(url, 5)
        await settle_subscriptions(subscriber, 5)
        accepted: list[int] = []
        for i in range(200):
            if await publish_accepted(publisher, i):
                accepted.append(i)
            if i % 10 == 5:
                assert await redis_server.kill_pubsub_clients() >= 1
            await asyncio.sleep(0.005)
        assert len(accepted) == 200  # only subscriber connections were killed
        for client in clients:
            assert await received(client, len(accepted)) == accepted
            assert client.resumes == []  # the WebSocket never dropped
            await client.close()
        assert subscriber.broker.stats()["reconnects"] >= 20
        assert subscriber.broker.stats()["gaps"] == 0
    await subscriber.stop()
    await publisher.stop()


async def test_a_redis_restart_is_announced_never_silent(redis_server: RedisServer) -> None:
    subscriber, publisher = service_on(redis_server), service_on(redis_server)
    await subscriber.start()
    await publisher.start()
    async with running_server(app_for(subscriber)) as url:
        clients = await clients_for(url, 3)
        await settle_subscriptions(subscriber, 3)
        before = [i for i in range(20) if await publish_accepted(publisher, i)]
        for client in clients:
            assert await received(client, len(before)) == before
        await redis_server.kill()
        failed = [i for i in range(20, 25) if not await publish_accepted(publisher, i)]
        assert failed == list(range(20, 25))  # fail fast, never queued silently
        await redis_server.start()
        async with asyncio.timeout(10 * UNIT):
            while not (subscriber.broker.healthy and publisher.broker.healthy):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        after: list[int] = []
        for i in range(25, 45):
            if await publish_accepted(publisher, i):
                after.append(i)
        assert after, "nothing could be published after the restart"
        for client in clients:
            got = await received(client, len(after))
            assert got == after
            notices: list[Any] = [r for r in client.resumes if not r.recovered]
            assert notices, "the restart's lost history was not announced"
            await client.close()
        assert subscriber.stats()["broker_gaps"] >= 1
    await subscriber.stop()
    await publisher.stop()
