"""RedisBroker against real Redis: the shared server under a unique prefix per test,
and a redis-server of our own for the faults (kill/restart, CLIENT KILL, a frozen server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from service import MessageType, WebSocketMessage, WebSocketService
from service.brokers import Publication, from_url
from service.brokers.redis import RedisBroker
from service.errors import BrokerUnavailable
from service.testing import MockWebSocket
from tests.service.redis_helpers import (
    REDIS_URL,
    Collector,
    RedisServer,
    delete_prefix,
    unique_prefix,
    wait_until,
)
from tests.support import UNIT, free_port

pytestmark = [pytest.mark.redis, pytest.mark.integration]

Factory = Callable[..., RedisBroker]


def ignore(publication: Publication) -> None:
    pass


def message(type_: MessageType, **data: Any) -> WebSocketMessage:
    return WebSocketMessage(type=type_, data=data)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(REDIS_URL, prefix)


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Factory]:
    """Brokers on the shared Redis and this test's prefix, disconnected afterwards."""
    made: list[RedisBroker] = []

    def factory(url: str = REDIS_URL, **options: Any) -> RedisBroker:
        options.setdefault("prefix", prefix)
        made.append(RedisBroker(url, **options))
        return made[-1]

    yield factory
    for broker in made:
        await broker.disconnect()


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    async with Redis.from_url(REDIS_URL) as client:
        yield client


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server


async def test_publications_reach_the_other_broker_once_and_in_order(make: Factory) -> None:
    a, b = make(), make()
    got_a, got_b = Collector(), Collector()
    await a.connect(got_a)
    await b.connect(got_b)
    await b.subscribe("t1")
    await b.subscribe("t2")
    await a.subscribe("t1")
    n = 1000

    async def burst(topic: str) -> list[int]:
        return [await a.publish(topic, f"{topic}-{i}".encode()) for i in range(n)]

    assert list(await asyncio.gather(burst("t1"), burst("t2"))) == [list(range(1, n + 1))] * 2
    assert await a.publish("t3", b"nobody listens") == 1
    await b.unsubscribe("t1")
    await a.publish("t1", b"after unsubscribe")
    await a.publish("t2", b"marker")  # b gets it after anything published before it
    await got_b.wait_for(2 * n + 1, timeout=5)
    await got_a.wait_for(n + 1, timeout=5)

    for topic in ("t1", "t2"):
        epoch, _ = await a.position(topic)
        received = got_b.of(topic)
        assert [p.seq for p in received] == list(range(1, len(received) + 1))
        assert {p.epoch for p in received} == {epoch}
    assert got_b.payloads("t1") == [f"t1-{i}".encode() for i in range(n)]
    assert got_b.payloads("t2") == [f"t2-{i}".encode() for i in range(n)] + [b"marker"]
    assert len(got_b.received) == 2 * n + 1
    # a hears its own publications (the one fan-out path), and only on t1
    assert got_a.payloads("t1") == [f"t1-{i}".encode() for i in range(n)] + [b"after unsubscribe"]
    assert len(got_a.received) == n + 1
    stats = b.stats()
    assert stats["kind"] == "redis" and stats["healthy"] and stats["subscribed_topics"] == 1
    assert a.stats()["published"] == 2 * n + 3


async def test_two_services_share_topics_through_redis(prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}"
    one = WebSocketService(broker=url, heartbeat_interval=None, retain={"models": "id"})
    two = WebSocketService(broker=url, heartbeat_interval=None, retain={"models": "id"})
    socket = MockWebSocket()
    try:
        await one.start()
        await two.start()
        cid = await one.connect(socket)
        await one.subscribe(cid, "training")
        for i in range(3):
            await two.broadcast(message(MessageType.TRAINING_PROGRESS, i=i), "training")
        await two.broadcast(message(MessageType.MODEL_UPDATED, id="m1"), "models")
        await wait_until(lambda: len(socket.of_type("training_progress")) == 3, what="3 messages")
        progress = socket.of_type("training_progress")
        assert [(m["data"]["i"], m["seq"]) for m in progress] == [(0, 1), (1, 2), (2, 3)]
        await one.subscribe(cid, "models")  # retained values come from the other process
        assert [m["data"]["id"] for m in socket.of_type("model_updated")] == ["m1"]
    finally:
        await one.stop()
        await two.stop()


async def test_retained_last_values_oldest_first(make: Factory) -> None:
    a, b = make(), make()
    await a.publish("r", b"a1", retain_key="a")
    await a.publish("r", b"b1", retain_key="b")
    await a.publish("r", b"plain")
    await a.publish("r", b"a2", retain_key="a")
    epoch, _ = await a.position("r")
    values = await b.last_values("r")
    assert [(p.payload, p.seq, p.epoch) for p in values] == [(b"b1", 2, epoch), (b"a2", 4, epoch)]
    assert await b.last_values("never-used") == []
    await b.forget_value("r", "b")  # any process forgets for all of them
    await b.forget_value("r", "no-such-key")
    await b.forget_value("never-used", "a")
    assert [p.payload for p in await a.last_values("r")] == [b"a2"]


@pytest.mark.parametrize("broker", ["memory://", "redis"])
async def test_the_service_forgets_a_retained_value(broker: str, prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}" if broker == "redis" else broker
    service = WebSocketService(broker=url, heartbeat_interval=None, retain={"models": "id"})
    socket = MockWebSocket()
    try:
        await service.start()
        for model in ("m1", "m2"):
            await service.broadcast(message(MessageType.MODEL_UPDATED, id=model), "models")
        await service.forget_retained("models", "m1")
        cid = await service.connect(socket)
        await service.subscribe(cid, "models")
        assert [m["data"]["id"] for m in socket.of_type("model_updated")] == ["m2"]
    finally:
        await service.stop()


async def test_a_burst_of_publishes_waits_for_free_connections(make: Factory) -> None:
    a = make()
    seqs = await asyncio.gather(*(a.publish("burst", b"x") for _ in range(300)))
    assert sorted(seqs) == list(range(1, 301))


async def test_position_and_history(make: Factory) -> None:
    a = make(history_size=10)
    epoch, seq = await a.position("h")
    assert seq == 0
    for i in range(1, 26):
        assert await a.publish("h", str(i).encode()) == i
    assert await a.position("h") == (epoch, 25)  # the first publish kept that epoch

    replay = await a.history("h", epoch=epoch, since_seq=15)
    assert (replay.complete, replay.epoch, replay.seq) == (True, epoch, 25)
    assert [(p.seq, p.payload, p.epoch) for p in replay.publications] == [
        (i, str(i).encode(), epoch) for i in range(16, 26)
    ]
    caught_up = await a.history("h", epoch=epoch, since_seq=25)
    assert (caught_up.complete, list(caught_up.publications)) == (True, [])
    for since, asked in [(14, epoch), (0, epoch), (26, epoch), (-1, epoch), (20, "other")]:
        gone = await a.history("h", epoch=asked, since_seq=since)
        assert (gone.complete, list(gone.publications), gone.epoch, gone.seq) == (
            False,
            [],
            epoch,
            25,
        ), (since, asked)


async def test_history_respects_ttl_and_size_zero(make: Factory) -> None:
    short = make(history_ttl=0.2)
    await short.publish("ttl", b"old")
    await asyncio.sleep(0.3)
    await short.publish("ttl", b"new")
    epoch, _ = await short.position("ttl")
    assert not (await short.history("ttl", epoch=epoch, since_seq=0)).complete
    fresh = await short.history("ttl", epoch=epoch, since_seq=1)
    assert fresh.complete and [p.payload for p in fresh.publications] == [b"new"]

    none = make(history_size=0)
    await none.publish("zero", b"x")
    epoch, _ = await none.position("zero")
    assert not (await none.history("zero", epoch=epoch, since_seq=0)).complete
    assert (await none.history("zero", epoch=epoch, since_seq=1)).complete


async def test_lost_state_starts_a_new_epoch(make: Factory, admin: Redis, prefix: str) -> None:
    a = make()
    for i in range(3):
        await a.publish("w", b"%d" % i, retain_key="k")
    epoch, _ = await a.position("w")

    def key(kind: str) -> str:
        return f"{prefix}:{kind}:{{w}}"

    await admin.delete(key("seq"))  # the counter alone: restored from the history
    assert await a.position("w") == (epoch, 3)
    assert await a.publish("w", b"3") == 4

    await admin.delete(key("epoch"))  # e.g. evicted: nothing of the old epoch is trusted
    renewed, seq = await a.position("w")
    assert renewed != epoch and seq == 0
    assert await a.last_values("w") == []
    assert not (await a.history("w", epoch=epoch, since_seq=2)).complete

    await admin.delete(*(key(kind) for kind in ("epoch", "seq", "history", "retain")))
    assert await a.publish("w", b"wiped") == 1
    assert (await a.position("w"))[0] not in (epoch, renewed)


async def test_prefix_from_the_url(prefix: str, admin: Redis) -> None:
    broker = from_url(f"{REDIS_URL}?prefix={prefix}&socket_keepalive=true")
    try:
        assert isinstance(broker, RedisBroker) and broker.stats()["prefix"] == prefix
        await broker.publish("u", b"x")
        assert await admin.exists(f"{prefix}:seq:{{u}}", f"{prefix}:history:{{u}}") == 2
    finally:
        await broker.disconnect()
    with pytest.raises(ValueError, match="prefix"):
        RedisBroker(REDIS_URL, prefix="")


async def test_connect_and_publish_fail_fast_without_redis(make: Factory) -> None:
    broker = make(f"redis://127.0.0.1:{free_port()}/0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerUnavailable):
        await broker.connect(ignore)
    with pytest.raises(BrokerUnavailable):
        await broker.publish("t", b"x")
    assert loop.time() - started < 3 * UNIT
    assert not broker.healthy and broker.stats()["last_error"]


async def test_redis_restart_mid_stream(server: RedisServer) -> None:
    sub = RedisBroker(server.url, reconnect_backoff=(0.05, 0.3))
    pub = RedisBroker(server.url, reconnect_backoff=(0.05, 0.3))
    got = Collector()
    try:
        await sub.connect(got)
        await pub.connect(ignore)
        await sub.subscribe("live")
        for i in range(3):
            await pub.publish("live", b"%d" % i)
        await got.wait_for(3)
        before = got.received[0].epoch

        await server.kill()
        await wait_until(lambda: not sub.healthy and not pub.healthy, what="an unhealthy broker")
        loop = asyncio.get_running_loop()
        for call in (
            pub.publish("live", b"lost"),
            pub.position("live"),
            sub.subscribe("other"),
        ):
            started = loop.time()
            with pytest.raises(BrokerUnavailable):
                await call
            assert loop.time() - started < 3 * UNIT

        await server.start()
        await wait_until(lambda: sub.healthy and pub.healthy, timeout=5, what="recovery")
        assert await pub.publish("live", b"back") == 1  # a wiped Redis: new epoch, seq 1
        await got.wait_for(4)
        back = got.received[-1]
        assert (back.payload, back.seq) == (b"back", 1) and back.epoch != before
        assert len(got.received) == 4
        assert sub.stats()["reconnects"] == 1 and sub.stats()["last_error"]
    finally:
        await sub.disconnect()
        await pub.disconnect()


async def test_client_kill_pubsub_twenty_times(server: RedisServer) -> None:
    sub = RedisBroker(server.url, reconnect_backoff=(0.01, 0.1))
    pub = RedisBroker(server.url)  # never connected: publishing needs no subscriber
    got = Collector()

    def recovered(reconnects: int) -> Callable[[], bool]:
        return lambda: sub.healthy and sub.stats()["reconnects"] == reconnects

    try:
        with capture_logs() as logs:
            await sub.connect(got)
            await sub.subscribe("k0")
            await sub.subscribe("k1")
            for round_ in range(1, 21):
                assert await server.kill_pubsub_clients() >= 1
                await wait_until(recovered(round_), what=f"reconnect {round_}")
                await pub.publish(f"k{round_ % 2}", b"%d" % round_)
                await got.wait_for(round_)
                assert got.received[-1].payload == b"%d" % round_
        assert len(got.received) == 20
        events = [entry["event"] for entry in logs]
        assert events.count("redis_broker_disconnected") == 20
        assert events.count("redis_broker_reconnected") == 20
    finally:
        await sub.disconnect()
        await pub.disconnect()


async def test_frozen_redis_is_detected_and_publish_does_not_hang(server: RedisServer) -> None:
    broker = RedisBroker(
        server.url, ping_interval=0.2, publish_timeout=0.5, reconnect_backoff=(0.05, 0.2)
    )
    got = Collector()
    try:
        await broker.connect(got)
        await broker.subscribe("p")
        await asyncio.sleep(1.0)  # idle for five PINGs, all answered
        assert broker.healthy and broker.stats()["reconnects"] == 0
        server.pause()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(BrokerUnavailable):
                await broker.publish("p", b"frozen")
            assert loop.time() - started < 3 * UNIT
            await wait_until(lambda: not broker.healthy, timeout=3, what="a missed PING")
        finally:
            server.resume()
        await wait_until(lambda: broker.healthy, timeout=5, what="recovery")
        await broker.publish("p", b"thawed")
        await wait_until(lambda: b"thawed" in got.payloads("p"), what="a publication")
    finally:
        await broker.disconnect()
