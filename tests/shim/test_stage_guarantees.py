"""What the shim guarantees at every stage, behind real uvicorn with an old-style app.

The endpoint is the legacy one (``await manager.connect(ws)``; a ``receive_text``
loop; ``manager.disconnect(ws)`` on ``WebSocketDisconnect``), the manager is the
shim and the app has ``DirectSendMiddleware``. Clients are real ``websockets``
clients on 127.0.0.1, old-protocol and envelope mixed, plus a raw TCP client
that completes the handshake and never reads (tests/service/test_close_abort.py).

- one writer per socket: a client that stops reading is closed (1013) and reset
  after ``close_timeout``, whichever side delivers, while the producer's legacy
  ``manager.broadcast`` never waits for it and every reader gets every event
  once, in order;
- a flip while a client's queue holds a backlog neither drops nor repeats;
- ``authorize`` keeps forbidden topics from legacy-side deliveries too;
- the service's size policy, rate limit and binary answer apply at every stage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from legacy import producers
from service import RateLimit, SendLimits
from shim import Stage
from tests.service.test_close_abort import TCP_CLOSE, stalled_client, tcp_state
from tests.service.test_transport_cap import flood
from tests.shim.stage_support import (
    ENVELOPE,
    closed_code,
    event_number,
    eventually,
    progress_event,
    read_frames,
    shim_server,
    slow_reader,
)
from tests.support import UNIT, connect, receive_json

pytestmark = pytest.mark.integration

CLOSE_TIMEOUT = 0.5
PAD = "x" * 20_000


async def hello(ws: ClientConnection) -> dict[str, Any]:
    frame = await receive_json(ws)
    assert frame["type"] == "connection_established", frame
    return frame


# -- 1. a client that stops reading, at every stage ------------------------------------

#: Bound on the events produced. The stalled client's kernel buffers on the server
#: side take up to tcp_wmem's max (4 MiB here), then uvicorn's 64 KiB and the queue's
#: 300 KB: it overflows after about 230 events of 20 KB.
MAX_STALL_EVENTS = 600
AFTER_CLOSE = 20  # events produced after the stalled client was closed
READER_LAG = 4  # the producer waits for the readers (their queues never overflow)


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_client_that_stops_reading_is_closed_and_reset_without_holding_anyone_up(
    stage: Stage,
) -> None:
    async with shim_server(
        stage,
        close_timeout=CLOSE_TIMEOUT,
        send_limits=SendLimits(max_messages=10_000, max_bytes=300_000),
    ) as s:
        stalled = await asyncio.to_thread(stalled_client, s.port)
        readers: list[ClientConnection] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            readers = [
                await connect(s.ws),  # old protocol, permessage-deflate (no direct path)
                await connect(s.ws, subprotocols=ENVELOPE, compression=None),
                await connect(f"{s.ws}?format=envelope", compression=None),
            ]
            for ws in readers[1:]:
                await hello(ws)
            assert await eventually(lambda: s.manager.stats()["connections"] == 4)

            got: list[list[dict[str, Any]]] = [[] for _ in readers]

            async def read(index: int, ws: ClientConnection) -> None:
                for _ in range(MAX_STALL_EVENTS):
                    got[index].append(await receive_json(ws, 10))

            def readers_reached(n: int) -> Callable[[], bool]:
                return lambda: min(len(g) for g in got) >= n

            tasks = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(readers)]
            sent: list[dict[str, Any]] = []
            loop = asyncio.get_running_loop()
            closed_at: float | None = None
            closed_after: int | None = None

            async def produce() -> None:
                nonlocal closed_at, closed_after
                for i in range(MAX_STALL_EVENTS):
                    payload = progress_event(i, PAD)
                    sent.append(payload)
                    # A legacy broadcast that awaited the stalled socket would hang here.
                    await asyncio.wait_for(s.manager.broadcast(payload), 5 * UNIT)
                    if closed_after is None and s.service.stats()["closed_slow"]:
                        closed_at, closed_after = loop.time(), i
                    if closed_after is not None and i >= closed_after + AFTER_CLOSE:
                        return
                    paced = await eventually(readers_reached(i - READER_LAG), timeout=10)
                    assert paced, f"the readers stopped at event {i}: {[len(g) for g in got]}"

            await asyncio.wait_for(produce(), 40 * UNIT)
            assert closed_at is not None, "the stalled client was never closed"
            assert await eventually(lambda: all(len(g) >= len(sent) for g in got), timeout=10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            count = len(sent)
            for frames in got:
                assert [event_number(f) for f in frames] == list(range(count))
            assert got[0] == sent  # the old client: the app's payloads, exactly
            for frames in got[1:]:
                assert {(f["type"], f["topic"]) for f in frames} == {
                    ("training_progress", "training")
                }
                assert [f["data"]["message"] for f in frames] == [PAD] * count
            for ws in readers:
                await read_frames(ws, 0)  # and nothing twice

            assert s.service.stats()["closed_slow"] == 1
            reset = await eventually(
                lambda: tcp_state(stalled) == TCP_CLOSE,
                timeout=max(0.1, (closed_at + CLOSE_TIMEOUT + 3 * UNIT - loop.time()) / UNIT),
                interval=0.05,
            )
            assert reset, "the server never reset the stalled client's TCP connection"
            assert await eventually(lambda: s.manager.stats()["connections"] == 3)
            assert s.service.stats()["connections"] == 3
            assert await eventually(lambda: s.log.cleanups == 1)  # the endpoint's cleanup ran
            assert s.manager.stats()["endpoints"]["/ws"]["stages"] == {stage.value: 3}
        finally:
            for task in tasks:
                task.cancel()
            for ws in readers:
                await ws.close()
            stalled.close()


# -- 2. a flip while the client's queue holds a backlog --------------------------------

FLIPS = [(Stage.NEW, Stage.LEGACY), (Stage.LIVE, Stage.SHADOW), (Stage.LEGACY, Stage.NEW)]
BACKLOG = 8  # events waiting in the server's queue when the flip happens
MAX_EVENTS = 300  # bound on events queued while waiting for that backlog


@pytest.mark.parametrize("envelope", [False, True], ids=["old", "envelope"])
@pytest.mark.parametrize(("before", "after"), FLIPS, ids=[f"{a}-{b}" for a, b in FLIPS])
async def test_a_flip_with_a_queued_backlog_neither_drops_nor_repeats(
    before: Stage, after: Stage, envelope: bool
) -> None:
    # Big enough that the paused client never overflows (about 6 MB at most).
    limits = SendLimits(max_messages=10_000, max_bytes=16 * 1024 * 1024)
    async with shim_server(before, send_limits=limits) as s:
        url = f"{s.ws}?format=envelope" if envelope else s.ws
        ws = await slow_reader(url, s.port)
        try:
            assert await eventually(lambda: len(s.service.connections) == 1)
            (connection,) = s.service.connections.values()
            sent: list[dict[str, Any]] = []
            for i in range(MAX_EVENTS):  # the client reads nothing meanwhile
                sent.append(progress_event(i, PAD))
                await asyncio.wait_for(s.manager.broadcast(sent[-1]), 5 * UNIT)
                if connection.backlog >= BACKLOG:
                    break
            queued = connection.backlog
            assert queued >= BACKLOG, "the client's queue never held a backlog"

            await s.flip(after)
            assert connection.backlog == queued  # nothing discarded by the flip
            for i in range(len(sent), len(sent) + 5):  # and the new side queues behind it
                sent.append(progress_event(i, PAD))
                await asyncio.wait_for(s.manager.broadcast(sent[-1]), 5 * UNIT)
            assert connection.backlog == queued + 5
            assert not connection.closed

            count = len(sent) + (1 if envelope else 0)
            frames = await read_frames(ws, count, timeout=15)  # resume reading
            if envelope:
                assert frames.pop(0)["type"] == "connection_established"
                assert {f["type"] for f in frames} == {"training_progress"}
            else:
                assert frames == sent
            assert [event_number(f) for f in frames] == list(range(len(sent)))
            assert s.service.stats()["closed_slow"] == 0
        finally:
            await ws.close()


# -- 3. access rules on the legacy side -------------------------------------------------


def models_only(principal: Any, topic: str, action: str) -> bool:
    return topic == "models"


@pytest.mark.parametrize("stage", list(Stage))
async def test_authorize_keeps_forbidden_topics_from_every_delivering_side(stage: Stage) -> None:
    async with (
        shim_server(stage, authorize=models_only) as s,
        connect(s.ws, compression=None) as old,
        connect(s.ws, subprotocols=ENVELOPE, compression=None) as new,
    ):
        await hello(new)
        refusals = [await receive_json(new) for _ in range(3)]  # training, system, custom
        assert {(r["type"], r["data"]["code"]) for r in refusals} == {("error", "forbidden")}
        assert await eventually(lambda: s.manager.stats()["connections"] == 2)

        models = [producers.model_created_payload(f"m-{i}", f"model {i}", i) for i in range(3)]
        for i, payload in enumerate(models):
            await s.manager.broadcast(progress_event(i))  # topic training: forbidden
            await s.manager.broadcast(producers.bare_progress_payload(0.5, "s"))  # training
            await s.manager.broadcast(payload)  # topic models: allowed
        await s.manager.broadcast(producers.status_payload("ok", "up", active_phases=[]))

        assert await read_frames(old, len(models)) == models
        frames = await read_frames(new, len(models))
        assert [(f["type"], f["topic"]) for f in frames] == [("model_created", "models")] * 3
        assert [f["data"]["model_id"] for f in frames] == ["m-0", "m-1", "m-2"]


# -- 4. size policy and rate limit on the legacy side -----------------------------------


@pytest.mark.parametrize("stage", [Stage.LEGACY, Stage.SHADOW])
async def test_an_oversized_frame_closes_1009_at_a_legacy_delivering_stage(stage: Stage) -> None:
    async with shim_server(stage, max_message_size=16_384) as s:
        async with connect(s.ws, compression=None) as old:
            await old.send("small")
            assert await eventually(lambda: s.log.received == ["small"])
            await old.send("x" * 65_536)
            assert await closed_code(old) == 1009
        assert await eventually(lambda: s.log.cleanups == 1)
        assert s.log.received == ["small"]  # the oversized frame never reached the endpoint
        assert s.service.stats()["closed_too_big"] == 1
        assert await eventually(lambda: s.manager.stats()["connections"] == 0)
        assert s.service.stats()["connections"] == 0


FLOOD = 20
BURST = 3


@pytest.mark.parametrize("stage", [Stage.LEGACY, Stage.SHADOW])
async def test_a_flooding_old_client_is_closed_1008_at_a_legacy_delivering_stage(
    stage: Stage,
) -> None:
    limit = RateLimit(rate=0.5, burst=BURST, max_violations=5, window=10.0)
    async with shim_server(stage, rate_limit=limit) as s:
        async with connect(s.ws, compression=None) as old:
            for i in range(FLOOD):
                with contextlib.suppress(Exception):  # the server may close meanwhile
                    await old.send(f"frame {i}")
            assert await closed_code(old) == 1008
        assert await eventually(lambda: s.log.cleanups == 1)
        stats = s.service.stats()
        assert stats["closed_rate_limited"] == 1
        assert stats["rate_limited"] >= 4
        assert s.log.received[:BURST] == [f"frame {i}" for i in range(BURST)]
        assert len(s.log.received) < FLOOD  # the excess was dropped
        assert await eventually(lambda: s.manager.stats()["connections"] == 0)


async def test_a_flooding_envelope_client_is_told_rate_limited_at_legacy() -> None:
    limit = RateLimit(rate=0.5, burst=BURST, max_violations=None)
    async with (
        shim_server(Stage.LEGACY, rate_limit=limit) as s,
        connect(s.ws, subprotocols=ENVELOPE, compression=None) as new,
    ):
        await hello(new)
        for i in range(10):
            await new.send(f"frame {i}")
        errors = [await receive_json(new) for _ in range(10 - BURST)]
        assert {(e["type"], e["data"]["code"]) for e in errors} == {("error", "rate_limited")}
        assert s.log.received == [f"frame {i}" for i in range(BURST)]
        await s.manager.broadcast(progress_event(7))
        (event,) = await read_frames(new, 1)
        assert event_number(event) == 7  # still connected, still served


@pytest.mark.parametrize("stage", list(Stage))
async def test_no_oversized_frame_reaches_the_endpoint_after_the_1009_close(stage: Stage) -> None:
    async with shim_server(stage, max_message_size=16_384) as s:
        async with connect(s.ws, compression=None) as old:
            await old.send("x" * 65_536)
            await old.send("y" * 65_536)  # on its way before the close frame reaches the client
            assert await closed_code(old) == 1009
        assert await eventually(lambda: s.log.cleanups == 1)
        assert [len(text) for text in s.log.received] == []


@pytest.mark.parametrize("stage", list(Stage))
async def test_no_flood_frame_reaches_the_endpoint_after_the_1008_close(stage: Stage) -> None:
    limit = RateLimit(rate=0.5, burst=BURST, max_violations=5, window=10.0)
    async with shim_server(stage, rate_limit=limit) as s:
        async with connect(s.ws, compression=None) as old:
            for i in range(FLOOD):
                with contextlib.suppress(Exception):
                    await old.send(f"frame {i}")
            assert await closed_code(old) == 1008
        assert await eventually(lambda: s.log.cleanups == 1)
        assert s.log.received == [f"frame {i}" for i in range(BURST)]


# -- 5. binary frames -------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_binary_frame_closes_an_old_client_1003_and_cleans_its_route(stage: Stage) -> None:
    async with shim_server(stage) as s, connect(s.ws, compression=None) as stays:
        async with connect(s.ws, compression=None) as old:
            assert await eventually(lambda: s.manager.stats()["connections"] == 2)
            await old.send(b"\x00\x01binary")
            assert await closed_code(old) == 1003
        assert await eventually(lambda: s.manager.stats()["connections"] == 1)
        assert await eventually(lambda: s.log.cleanups == 1)
        assert s.service.stats()["connections"] == 1
        assert s.manager.stats()["counters"]["binary_refused"] == 1
        payload = progress_event(1)
        await s.manager.broadcast(payload)
        assert await read_frames(stays, 1) == [payload]


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_binary_frame_gets_an_envelope_client_an_error_and_it_stays(stage: Stage) -> None:
    async with (
        shim_server(stage) as s,
        connect(f"{s.ws}?format=envelope", compression=None) as new,
    ):
        await hello(new)
        await new.send(b"\x00\x01binary")
        error = await receive_json(new)
        assert error["type"] == "error"
        assert error["data"]["code"] == "binary_not_supported"
        await new.send("text still works")
        assert await eventually(lambda: s.log.received == ["text still works"])
        await s.manager.broadcast(progress_event(3))
        (event,) = await read_frames(new, 1)
        assert event_number(event) == 3
        assert s.manager.stats()["connections"] == 1
        assert s.log.cleanups == 0


# -- 6. what the server's transport holds: pongs for a client that never reads ----------


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_ping_flooder_that_never_reads_is_reset_at_every_stage(stage: Stage) -> None:
    limits = SendLimits(max_transport_bytes=512 * 1024)
    async with shim_server(stage, send_limits=limits) as s, connect(s.ws) as reader:
        sock = await asyncio.to_thread(stalled_client, s.port, "/ws")
        try:
            assert await eventually(lambda: s.manager.stats()["connections"] == 2)
            flooding = asyncio.ensure_future(asyncio.to_thread(flood, sock, 10 * UNIT))
            produced = 0
            async with asyncio.timeout(15 * UNIT):
                while not flooding.done():
                    await s.manager.broadcast(progress_event(produced))
                    produced += 1
                    await asyncio.sleep(0.01)
            assert await eventually(
                lambda: s.service.stats()["closed_transport_overflow"] == 1, timeout=10
            ), (await flooding, s.service.stats())
            assert await eventually(lambda: tcp_state(sock) == TCP_CLOSE, timeout=2)
            assert await eventually(lambda: s.manager.stats()["connections"] == 1)
            frames = await read_frames(reader, produced, timeout=10)
            assert [event_number(frame) for frame in frames] == list(range(produced))
        finally:
            sock.close()


# -- 7. the app's binary frames: through the one writer, in order, at every stage -------


@pytest.mark.parametrize("stage", list(Stage))
async def test_the_apps_binary_frames_reach_the_client_in_order_at_every_stage(
    stage: Stage,
) -> None:
    async with shim_server(stage) as s, connect(s.ws, compression=None) as old:
        assert await eventually(lambda: s.manager.stats()["connections"] == 1)
        (socket_of_the_app,) = s.manager.active_connections
        await s.manager.broadcast(progress_event(1))
        await socket_of_the_app.send_bytes(b"\x00\x01raw")
        await socket_of_the_app.send_json({"café": 1}, mode="binary")
        await s.manager.broadcast(progress_event(2))
        frames = [await asyncio.wait_for(old.recv(), 5 * UNIT) for _ in range(4)]
        assert frames[1:3] == [b"\x00\x01raw", '{"café":1}'.encode()]
        assert [event_number(orjson.loads(frames[i])) for i in (0, 3)] == [1, 2]
        assert s.manager.stats()["delivered"]["legacy"]["sent"] >= 2
