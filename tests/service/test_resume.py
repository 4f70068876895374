"""Resume after reconnect: exactly the missed messages, or an explicit ``recovered: false``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket

from service import MessageType, WebSocketMessage, WebSocketService
from service.asgi import lifespan, serve
from service.brokers import MemoryBroker
from service.client import ResumingClient
from service.testing import MockWebSocket
from tests.service.redis_helpers import REDIS_URL, delete_prefix, unique_prefix
from tests.support import UNIT, running_server


def event(i: int) -> WebSocketMessage:
    return WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"i": i, "session_id": "s"})


async def subscribe(service: WebSocketService, cid: str, resume: Any = None) -> None:
    data: dict[str, Any] = {"topic": "training"}
    if resume is not None:
        data["resume"] = resume
    await service.handle_message(cid, orjson.dumps({"type": "subscribe", "data": data}).decode())


async def test_resume_replays_exactly_the_missed_messages_then_live_ones() -> None:
    service = WebSocketService(heartbeat_interval=None)
    first = MockWebSocket()
    cid = await service.connect(first)
    await subscribe(service, cid)
    for i in range(3):
        await service.broadcast(event(i), topic="training")
    last = first.of_type("training_progress")[-1]
    await service.disconnect(cid)
    for i in range(3, 8):
        await service.broadcast(event(i), topic="training")

    again = MockWebSocket()
    cid = await service.connect(again)
    await subscribe(service, cid, {"epoch": last["epoch"], "seq": last["seq"]})
    await service.broadcast(event(8), topic="training")
    ack = again.of_type("subscribed")[0]
    assert ack["data"]["recovered"] is True
    assert ack["data"]["seq"] == 8
    assert [m["data"]["i"] for m in again.of_type("training_progress")] == list(range(3, 9))
    assert [m["seq"] for m in again.of_type("training_progress")] == list(range(4, 10))
    assert service.stats()["resumes_complete"] == 1


@pytest.mark.parametrize("why", ["too_old", "other_epoch", "future"])
async def test_an_unrecoverable_gap_says_so_and_sends_the_last_value(why: str) -> None:
    service = WebSocketService(
        broker=MemoryBroker(history_size=3),
        heartbeat_interval=None,
        retain={"training": "session_id"},
    )
    for i in range(10):
        await service.broadcast(event(i), topic="training")
    epoch, _ = await service.broker.position("training")
    resume = {
        "too_old": {"epoch": epoch, "seq": 2},
        "other_epoch": {"epoch": "gone", "seq": 9},
        "future": {"epoch": epoch, "seq": 99},
    }[why]
    socket = MockWebSocket()
    cid = await service.connect(socket)
    await subscribe(service, cid, resume)
    ack = socket.of_type("subscribed")[0]
    assert ack["data"]["recovered"] is False
    replayed = socket.of_type("training_progress")
    assert [m["data"]["i"] for m in replayed] == [9]  # the last value, not a partial replay
    assert service.stats()["resumes_incomplete"] == 1


async def test_a_malformed_resume_is_an_error() -> None:
    service = WebSocketService(heartbeat_interval=None)
    socket = MockWebSocket()
    cid = await service.connect(socket)
    await subscribe(service, cid, {"epoch": 1, "seq": "x"})
    assert socket.of_type("error")[0]["data"]["code"] == "invalid_message"
    assert service.topics_of(cid) == frozenset()


def app_for(service: WebSocketService) -> FastAPI:
    app = FastAPI(lifespan=lifespan(service))

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        await serve(service, websocket)

    return app


@asynccontextmanager
async def cleaned(broker: str, prefix: str) -> AsyncIterator[None]:
    """Delete the Redis keys under ``prefix`` afterwards (nothing for the memory broker)."""
    try:
        yield
    finally:
        if broker == "redis":
            await delete_prefix(REDIS_URL, prefix)


@asynccontextmanager
async def served(broker: str) -> AsyncIterator[tuple[WebSocketService, str]]:
    service = WebSocketService(broker=broker, heartbeat_interval=None)
    async with running_server(app_for(service)) as url:
        yield service, url


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_clients_dropped_while_publishing_continue_get_every_message_once(
    broker: str,
) -> None:
    prefix = unique_prefix()
    url_of_broker = "memory://" if broker == "memory" else f"{REDIS_URL}?prefix={prefix}"
    total = 300
    rng = random.Random(7)
    async with cleaned(broker, prefix), served(url_of_broker) as (service, url):
        clients = [
            ResumingClient(f"{url}/ws", topics=["training"], min_delay=0.05, max_delay=0.5)
            for _ in range(10)
        ]
        for client in clients:
            client.start()
        # Every subscription acknowledged before publishing: a message published
        # while a subscribe is under way may belong before the position it is
        # acknowledged at (with Redis, the position is read after registering).
        async with asyncio.timeout(10 * UNIT):
            while not all("training" in client.positions for client in clients):
                await asyncio.sleep(0.01)
        got: dict[int, list[int]] = {i: [] for i in range(len(clients))}

        async def read(index: int, client: ResumingClient) -> None:
            while len(got[index]) < total:
                message = await client.receive(15 * UNIT)
                got[index].append(message["data"]["i"])

        readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(clients)]

        async def chaos() -> None:
            for _ in range(12):
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                rng.choice(clients).drop_connection()

        dropper = asyncio.create_task(chaos())
        for i in range(total):
            await service.broadcast(event(i), topic="training")
            await asyncio.sleep(0.005)
        await dropper
        try:
            await asyncio.wait_for(asyncio.gather(*readers), 20 * UNIT)
        except TimeoutError:
            detail = {
                i: (
                    len(got[i]),
                    sorted(set(range(total)) - set(got[i]))[:10],
                    c.resumes,
                    c.connections,
                    c.duplicates_dropped,
                )
                for i, c in enumerate(clients)
                if len(got[i]) < total
            }
            raise AssertionError(f"clients short of messages: {detail}") from None
        for index, client in enumerate(clients):
            assert got[index] == list(range(total)), f"client {index}"
            assert all(r.recovered for r in client.resumes)
        assert sum(len(c.resumes) for c in clients) >= 10
        for client in clients:
            await client.close()


class SlowHistoryBroker(MemoryBroker):
    """History answers only after ``gate`` opens, like a broker across the network."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()

    async def history(self, topic: str, *, epoch: str, since_seq: int) -> Any:
        answer = await super().history(topic, epoch=epoch, since_seq=since_seq)
        self.asked.set()
        await self.gate.wait()
        return answer


async def test_publications_during_a_slow_resume_are_neither_lost_nor_doubled() -> None:
    broker = SlowHistoryBroker()
    service = WebSocketService(broker=broker, heartbeat_interval=None)
    for i in range(3):
        await service.broadcast(event(i), topic="training")
    epoch, _ = await broker.position("training")
    socket = MockWebSocket()
    cid = await service.connect(socket)
    resuming = asyncio.ensure_future(subscribe(service, cid, {"epoch": epoch, "seq": 1}))
    await broker.asked.wait()  # the history is taken (up to seq 3); the answer is in flight
    await service.broadcast(event(3), topic="training")  # seq 4: live, during the resume
    broker.gate.set()
    await resuming
    await service.broadcast(event(4), topic="training")
    kinds = [m["type"] for m in socket.sent_messages[1:]]
    assert kinds[0] == "subscribed"
    assert [m["seq"] for m in socket.of_type("training_progress")] == [2, 3, 4, 5]


@pytest.mark.integration
async def test_a_client_dropped_before_its_first_message_resumes_from_its_ack() -> None:
    async with served("memory://") as (service, url):
        client = ResumingClient(f"{url}/ws", topics=["training"], min_delay=0.2, max_delay=0.3)
        client.start()
        async with asyncio.timeout(5 * UNIT):
            while service.stats()["subscriptions"] < 1:
                await asyncio.sleep(0.01)
        client.drop_connection()
        for i in range(5):
            await service.broadcast(event(i), topic="training")
        got = [(await client.receive(5 * UNIT))["data"]["i"] for _ in range(5)]
        assert got == list(range(5))
        assert [r.recovered for r in client.resumes] == [True]
        await client.close()


@pytest.mark.integration
async def test_a_dropped_client_stays_offline_as_long_as_asked_then_resumes() -> None:
    async with served("memory://") as (service, url):
        client = ResumingClient(f"{url}/ws", topics=["training"], min_delay=0.05, max_delay=0.1)
        client.start()
        async with asyncio.timeout(5 * UNIT):
            while "training" not in client.positions:
                await asyncio.sleep(0.01)
        await service.broadcast(event(0), topic="training")
        assert (await client.receive(5 * UNIT))["data"]["i"] == 0
        loop = asyncio.get_running_loop()
        dropped = loop.time()
        client.drop_connection(offline_for=1.0)
        for i in range(1, 6):
            await service.broadcast(event(i), topic="training")
        await asyncio.sleep(0.7)
        assert client.connections == 1  # still offline: min/max_delay alone would be over
        got = [(await client.receive(5 * UNIT))["data"]["i"] for _ in range(5)]
        assert loop.time() - dropped >= 1.0
        assert client.connections == 2
        assert got == list(range(1, 6))
        assert [r.recovered for r in client.resumes] == [True]
        await client.close()


@pytest.mark.integration
async def test_a_client_with_several_urls_takes_the_next_one_on_each_reconnect() -> None:
    with pytest.raises(ValueError, match="at least one URL"):
        ResumingClient([])
    async with served("memory://") as (first, a), served("memory://") as (second, b):
        client = ResumingClient(
            [f"{a}/ws", f"{b}/ws"], topics=["training"], min_delay=0.05, max_delay=0.1
        )
        client.start()
        joined = []
        for resumes, service in enumerate((first, second, first)):
            async with asyncio.timeout(5 * UNIT):  # connected, and the (re)subscription acked
                while "training" not in client.positions or len(client.resumes) < resumes:
                    await asyncio.sleep(0.01)
            joined.append(client.url)
            await service.broadcast(event(resumes), topic="training")
            assert (await client.receive(5 * UNIT))["data"]["i"] == resumes
            client.drop_connection()
        assert joined == [f"{a}/ws", f"{b}/ws", f"{a}/ws"]
        # Two memory brokers share no history: each resume is honestly incomplete.
        assert [r.recovered for r in client.resumes] == [False, False]
        await client.close()
