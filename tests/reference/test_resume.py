"""Resume through the reference backend's old-style endpoint (the shim), stage by stage.

Where the new side delivers (``live``, ``new``), an envelope client that drops and
resubscribes with its last position gets exactly what it missed, through the same
hub code as ``serve()``. Where the legacy side delivers, events carry no position,
so a resume cannot be honoured and the acknowledgement says ``recovered: false``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from flags import read_document, set_endpoint_stage, write_document
from service.client import ResumingClient
from shim.stages import Stage
from tests.reference.support import ENVELOPE, Backend
from tests.support import UNIT, connect, receive_json

pytestmark = pytest.mark.integration


@pytest.fixture
def new_stage(toggles: Path) -> None:
    write_document(toggles, set_endpoint_stage(read_document(toggles), "/ws", Stage.NEW))


@pytest.fixture
def live_stage(toggles: Path) -> None:
    write_document(toggles, set_endpoint_stage(read_document(toggles), "/ws", Stage.LIVE))


async def create_models(backend: Backend, names: list[str]) -> None:
    for name in names:
        answer = await backend.http.post("/api/models", json={"name": name})
        assert answer.status_code < 300, answer.text


async def models(client: ResumingClient, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5 * UNIT):
        while len(got) < count:
            message = await client.receive()
            if message["type"] == "model_created":
                got.append(message)
    return got


@pytest.mark.usefixtures("new_stage")
async def test_a_dropped_envelope_client_gets_what_it_missed_through_the_shim(
    backend: Backend,
) -> None:
    client = ResumingClient(f"{backend.ws_url}/ws", topics=["models"], min_delay=0.05)
    client.start()
    try:
        async with asyncio.timeout(5 * UNIT):
            while "models" not in client.positions:  # subscribed and acknowledged
                await asyncio.sleep(0.01)
        await create_models(backend, ["a"])
        first = await models(client, 1)
        client.drop_connection(offline_for=0.5)
        await create_models(backend, ["b", "c", "d"])
        rest = await models(client, 3)
        assert [m["data"]["model_info"]["name"] for m in first + rest] == ["a", "b", "c", "d"]
        assert [m["seq"] for m in rest] == [first[0]["seq"] + i for i in (1, 2, 3)]
        assert [r.recovered for r in client.resumes] == [True]
        assert client.duplicates_dropped == 0
    finally:
        await client.close()


@pytest.mark.usefixtures("live_stage")
async def test_a_replay_at_live_is_not_reported_as_a_difference(backend: Backend) -> None:
    # The legacy side never sends a reconnected client what it missed; only the new
    # side replays it. That is the resume working, not the two sides disagreeing.
    client = ResumingClient(f"{backend.ws_url}/ws", topics=["models"], min_delay=0.05)
    client.start()
    try:
        async with asyncio.timeout(5 * UNIT):
            while "models" not in client.positions:
                await asyncio.sleep(0.01)
        await create_models(backend, ["a"])
        await models(client, 1)
        client.drop_connection(offline_for=0.5)
        await create_models(backend, ["b", "c"])
        replayed = await models(client, 2)
        await create_models(backend, ["d"])  # live again: compared as usual
        live = await models(client, 1)
        assert [r.recovered for r in client.resumes] == [True]
        assert [m["data"]["model_info"]["name"] for m in replayed + live] == ["b", "c", "d"]
    finally:
        await client.close()
    await backend.manager.stop()  # compares everything still pending
    differ = backend.manager.differ
    assert differ.unexpected_total == 0, differ.recent()
    assert differ.counters()["/ws"]["matched"] >= 4  # "a" and "d", both sides


async def test_a_resume_on_the_legacy_side_says_it_cannot_recover(backend: Backend) -> None:
    # As after a rollback: the client holds a position from the new side.
    socket = await connect(f"{backend.ws_url}/ws", subprotocols=ENVELOPE)
    try:
        assert (await receive_json(socket))["type"] == "connection_established"
        resume = {"topic": "models", "resume": {"epoch": "e", "seq": 3}}
        await socket.send(orjson.dumps({"type": "subscribe", "data": resume, "id": "r"}).decode())
        ack = await receive_json(socket)
        assert ack["type"] == "subscribed" and ack["id"] == "r"
        assert ack["data"]["recovered"] is False
    finally:
        await socket.close()
