"""The reference backend across processes on the real Redis: every client gets every message once.

Two server processes on different ports, the first one with ``--workers 2``; 200
new-protocol clients spread over them; models created through REST on both
ports. Each broadcast goes through Redis, so each client must receive each
``model_created`` exactly once, in publish order (consecutive ``seq``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from flags import read_document, set_endpoint_stage, write_document
from shim.stages import Stage
from tests.reference.support import OPS_TOKEN
from tests.support import UNIT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 200
MODELS = 20


def start_server(port: int, env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "reference.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(argv, cwd=ROOT, env=env)


def delete_keys(prefix: str) -> None:
    """Leave the shared Redis as we found it."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def two_servers(tmp_path: Path, stage: Stage, workers: tuple[int, int]) -> Iterator[list[int]]:
    """Two reference-backend processes on one Redis prefix, ``/ws`` at ``stage``."""
    toggles = tmp_path / "toggles.json"
    shutil.copy(ROOT / "flags" / "toggles.json", toggles)
    write_document(toggles, set_endpoint_stage(read_document(toggles), "/ws", stage))
    prefix = f"test-mp-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "BROKER_URL": f"redis://127.0.0.1:6379/0?prefix={prefix}",
        "FLAGS_FILE": str(toggles),
        "TRAINING_AUTOPILOT_SECONDS": "0",
        "LOG_LEVEL": "warning",
        "WS_MIGRATION_OPS_TOKEN": OPS_TOKEN,
    }
    ports = [free_port(), free_port()]
    processes = [start_server(port, env, n) for port, n in zip(ports, workers, strict=True)]
    try:
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10 * UNIT)
            except subprocess.TimeoutExpired:
                process.kill()
        delete_keys(prefix)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[int]]:
    with two_servers(tmp_path, Stage.NEW, (2, 1)) as ports:
        yield ports


@pytest.fixture
def shadow_servers(tmp_path: Path) -> Iterator[list[int]]:
    with two_servers(tmp_path, Stage.SHADOW, (1, 1)) as ports:
        yield ports


async def wait_ready(port: int) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(int(300 * UNIT)):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"server on {port} never became ready")


async def open_client(port: int) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws", subprotocols=[Subprotocol("envelope.v1")], open_timeout=10
    )
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 10 * UNIT))
    assert hello["type"] == "connection_established"
    return ws


async def collect_models(ws: ClientConnection) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30 * UNIT):
        while len(got) < MODELS:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "model_created":
                got.append(frame)
    with pytest.raises(TimeoutError):  # and nothing more
        async with asyncio.timeout(0.3 * UNIT):
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "model_created":
                    got.append(frame)
                    break
    return got


async def test_two_processes_and_two_workers_deliver_every_message_once_in_order(
    servers: list[int],
) -> None:
    for port in servers:
        await wait_ready(port)
    clients = [await open_client(servers[i % 2]) for i in range(CLIENTS)]
    try:
        await asyncio.sleep(0.5 * UNIT)  # every worker's Redis subscription is confirmed
        collectors = [asyncio.create_task(collect_models(ws)) for ws in clients]
        async with httpx.AsyncClient() as http:
            for i in range(MODELS):
                port = servers[i % 2]
                answer = await http.post(
                    f"http://127.0.0.1:{port}/api/models", json={"name": f"model-{i}"}
                )
                assert answer.status_code == 200
        results = await asyncio.gather(*collectors)
        for got in results:
            names = [frame["data"]["model_info"]["name"] for frame in got]
            assert names == [f"model-{i}" for i in range(MODELS)]
            seqs = [frame["seq"] for frame in got]
            assert seqs == list(range(seqs[0], seqs[0] + MODELS))
            assert len({frame["epoch"] for frame in got}) == 1
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


async def test_shadow_across_processes_delivers_legacy_to_every_worker_and_compares_there(
    shadow_servers: list[int],
) -> None:
    """An event triggered in one worker reaches the other worker's old clients from its
    legacy side (ProducerScope.CLUSTER), and that worker's differ compares it."""
    for port in shadow_servers:
        await wait_ready(port)
    here, there = shadow_servers
    old_here = await connect(f"ws://127.0.0.1:{here}/ws")
    old_there = await connect(f"ws://127.0.0.1:{there}/ws")
    try:
        await asyncio.sleep(0.5 * UNIT)
        ops = {"authorization": f"Bearer {OPS_TOKEN}"}
        async with httpx.AsyncClient(headers=ops) as http:
            answer = await http.post(f"http://127.0.0.1:{here}/api/models", json={"name": "m"})
            assert answer.status_code == 200
            for ws in (old_here, old_there):
                got = orjson.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
                assert got["type"] == "model_created" and got["model_name"] == "m"
                with pytest.raises(TimeoutError):  # once
                    await asyncio.wait_for(ws.recv(), 0.5 * UNIT)
            await asyncio.sleep(2.5 * UNIT)  # the differ's settle time
            there_diff = (await http.get(f"http://127.0.0.1:{there}/ops/diff")).json()
            here_diff = (await http.get(f"http://127.0.0.1:{here}/ops/diff")).json()
        for diff in (here_diff, there_diff):
            assert diff["unexpected_total"] == 0, diff
            assert diff["counters"]["/ws"]["matched"] >= 2
    finally:
        await old_here.close()
        await old_there.close()
