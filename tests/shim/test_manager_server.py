"""CompatWebSocketManager behind real uvicorn, old and new clients mixed, every stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from legacy import producers
from legacy.catalogue import CATALOGUE
from service import MessageType, WebSocketMessage, WebSocketService
from service.messages import type_name
from shim.diff import DiffConfig, Differ, MismatchKind
from shim.manager import CompatWebSocketManager
from shim.stages import FixedStages, Stage
from shim.translate import Translator
from tests.support import UNIT, connect, receive_json, running_server

pytestmark = pytest.mark.integration

ENVELOPE = [Subprotocol("envelope.v1")]


@dataclass
class Backend:
    service: WebSocketService
    manager: CompatWebSocketManager
    stages: FixedStages
    differ: Differ
    url: str


def legacy_app(
    manager: CompatWebSocketManager, *, admits: Callable[[WebSocket], bool] | None = None
) -> FastAPI:
    """The legacy backend's endpoint code, verbatim: only the manager changed.

    ``admits`` is an access check of the endpoint's own, before ``manager.connect``
    (refused: close 1008), as a legacy endpoint may have had one.
    """
    app = FastAPI()

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        if admits is not None and not admits(websocket):
            await websocket.close(code=1008)
            return
        await manager.connect(websocket)
        try:
            while True:
                data = await websocket.receive_text()
                await manager.send_personal_message(f"echo: {data}", websocket)
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    return app


@asynccontextmanager
async def backend(
    stage: Stage = Stage.LEGACY,
    *,
    translator: Translator | None = None,
    endpoint_topics: dict[str, tuple[str, ...]] | None = None,
) -> AsyncIterator[Backend]:
    service = WebSocketService(heartbeat_interval=None)
    stages = FixedStages(default=stage)
    differ = Differ(DiffConfig(settle_seconds=0.2))
    manager = CompatWebSocketManager(
        service=service,
        decider=stages,
        differ=differ,
        translator=translator,
        endpoint_topics=endpoint_topics,
    )
    async with running_server(legacy_app(manager)) as url:
        yield Backend(service, manager, stages, differ, url)
    await manager.stop()
    manager.close()


async def drain(ws: ClientConnection, count: int) -> list[Any]:
    """Exactly ``count`` frames, then check that nothing else arrives."""
    frames = [orjson.loads(await asyncio.wait_for(ws.recv(), 3 * UNIT)) for _ in range(count)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.2 * UNIT)
    return frames


async def clients(url: str) -> tuple[ClientConnection, ClientConnection]:
    old = await connect(f"{url}/ws")
    new = await connect(f"{url}/ws", subprotocols=ENVELOPE)
    hello = await receive_json(new)
    assert hello["type"] == "connection_established"
    return old, new


def new_style(i: int) -> WebSocketMessage:
    return WebSocketMessage(
        type=MessageType.TRAINING_PROGRESS,
        data={
            "session_id": "s-1",
            "progress": i / 10,
            "current_epoch": i,
            "loss": 1.0 / (i + 1),
            "metrics": {"accuracy": 0.5},
        },
    )


@pytest.mark.parametrize("stage", list(Stage))
async def test_every_stage_delivers_each_event_once_in_each_clients_format(stage: Stage) -> None:
    translator = Translator()
    async with backend(stage) as b:
        old, new = await clients(b.url)
        for item in CATALOGUE:
            await b.manager.broadcast(item.fresh())
        produced = new_style(3)
        await b.service.broadcast(produced, topic="training")

        old_frames = await drain(old, len(CATALOGUE) + 1)
        expected_old: list[dict[str, Any] | None] = [item.payload for item in CATALOGUE]
        expected_old.append(translator.to_legacy(produced.model_copy(update={"topic": "training"})))
        assert old_frames == expected_old

        new_frames = await drain(new, len(CATALOGUE) + 1)
        expected_types = [
            type_name(translator.to_standard(item.fresh()).message.type) for item in CATALOGUE
        ]
        assert [f["type"] for f in new_frames] == [*expected_types, "training_progress"]
        assert new_frames[-1]["data"]["session_id"] == "s-1"
        for frame in new_frames:
            assert {"type", "data", "timestamp"} <= set(frame)

        await b.manager.stop()
        delivered = b.manager.stats()["delivered"]
        feeding = "new" if stage.new_delivers else "legacy"
        idle = "legacy" if feeding == "new" else "new"
        assert delivered[feeding]["sent"] == 2 * (len(CATALOGUE) + 1)
        assert delivered[idle]["sent"] == 0
        if stage.compares:
            assert b.differ.unexpected_total == 0
            counters = b.differ.counters()["/ws"]
            assert counters["matched"] > 0
        await old.close()
        await new.close()


async def test_live_flips_through_every_stage_without_loss_or_duplicates() -> None:
    path = [
        Stage.LEGACY,
        Stage.SHADOW,
        Stage.LIVE,
        Stage.NEW,
        Stage.LIVE,
        Stage.SHADOW,
        Stage.LEGACY,
        Stage.NEW,
        Stage.LEGACY,
    ]
    per_stage = 15
    translator = Translator()
    async with backend(Stage.LEGACY) as b:
        old, new = await clients(b.url)
        sent = 0
        for stage in path:
            b.stages.set("/ws", stage)
            await asyncio.sleep(0.01)
            assert all(route.stage is stage for route in b.manager.routes())
            for _ in range(per_stage):
                payload = producers.bare_progress_payload(sent / 1000, "flip")
                if sent % 2:  # an old producer
                    await b.manager.broadcast(payload)
                else:  # a new producer publishing the same event the new way
                    message = translator.to_standard(payload).message
                    await b.service.broadcast(message, topic=message.topic)
                sent += 1
        old_frames = await drain(old, sent)
        new_frames = await drain(new, sent)
        assert [round(f["progress"] * 1000) for f in old_frames] == list(range(sent))
        back = [translator.to_legacy(f) for f in new_frames]
        assert [round(f["progress"] * 1000) for f in back if f] == list(range(sent))
        assert b.manager.stats()["counters"]["rerouted_connections"] >= 2 * (len(path) - 1)
        await old.close()
        await new.close()


async def test_envelope_client_protocol_works_through_the_legacy_endpoint() -> None:
    async with backend(Stage.LEGACY) as b, connect(f"{b.url}/ws?format=envelope") as new:
        await receive_json(new)
        await new.send('{"type":"ping","id":"p1"}')
        assert (await receive_json(new))["type"] == "pong"
        await new.send('{"type":"subscribe","data":{"topic":"bad topic"},"id":"s"}')
        error = await receive_json(new)
        assert error["type"] == "error" and error["data"]["code"] == "invalid_topic"
        await new.send("hello")  # not a control frame: the endpoint code gets it
        echo = await receive_json(new)
        assert echo == {
            "type": "custom",
            "data": {"text": "echo: hello"},
            "timestamp": echo["timestamp"],
            "topic": "custom",
        }


async def test_the_differ_catches_a_broken_rule_and_a_missing_subscription() -> None:
    broken = Translator()
    original = broken.to_legacy

    def lossy_to_legacy(message: Any) -> Any:
        payload = original(message)
        if payload is not None and payload.get("type") == "training_update":
            payload = {**payload, "progress": 0.0}  # the bug: progress lost on the way back
        return payload

    broken.to_legacy = lossy_to_legacy  # type: ignore[method-assign]
    async with backend(
        Stage.SHADOW, translator=broken, endpoint_topics={"/ws": ("training", "system")}
    ) as b:
        old, new = await clients(b.url)
        for item in CATALOGUE:
            await b.manager.broadcast(item.fresh())
        await drain(old, len(CATALOGUE))
        await b.manager.stop()
        kinds = {(m.kind, m.type) for m in b.differ.recent(100) if not m.expected}
        assert (MismatchKind.FIELD, "training_progress") in kinds  # the broken rule
        assert any(kind is MismatchKind.MISSING and t == "model_created" for kind, t in kinds)
        field = next(m for m in b.differ.recent(100) if m.kind is MismatchKind.FIELD)
        assert any("progress" in f.path for f in field.fields)
        await old.close()
        await new.close()


async def test_a_dead_socket_is_removed_from_both_sides() -> None:
    async with backend(Stage.SHADOW) as b:
        old, new = await clients(b.url)
        old.transport.abort()  # gone without a close frame
        await asyncio.sleep(0.1)
        for i in range(3):
            await b.manager.broadcast(producers.bare_progress_payload(i / 10, "x"))
            await asyncio.sleep(0.05)
        assert len(b.manager.active_connections) == 1
        assert b.service.stats()["connections"] == 1
        assert len(await drain(new, 3)) == 3
        await new.close()


async def test_unserializable_payload_and_translation_failure_never_break_delivery() -> None:
    async with backend(Stage.LIVE) as b:
        old, new = await clients(b.url)
        await b.manager.broadcast({"type": "training_update", "bad": object()})
        await b.manager.broadcast(producers.bare_progress_payload(0.5, "x"))
        assert (await drain(old, 1))[0] == producers.bare_progress_payload(0.5, "x")
        assert len(await drain(new, 1)) == 1
        assert b.manager.stats()["counters"]["unserializable"] == 1
        await old.close()
        await new.close()
