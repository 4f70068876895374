"""Compressed fan-out received by Node's ``ws`` library, a strict RFC 6455/7692 client.

``ws_client.mjs`` connects to the three endpoint shapes of
:func:`tests.fanout_support.fanout_app` on a real uvicorn, offering
permessage-deflate as ``ws`` does by default (context takeover allowed both
ways), without context takeover, or with a 9-bit server window. It checks every
broadcast's padding by hash, sends envelope pings, subscribe requests and
protocol pings during the burst, can pause its socket and resume, and reports
what arrived; ``ws`` rejects any frame that breaks the protocol. Needs Node 20
and ``npm ci`` in ``tests/clients`` (``bash scripts/ensure-node-clients.sh``,
which ``scripts/test.sh`` runs): the tests fail, never skip, without them.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import CloseCode, SendLimits, WebSocketService
from tests.fanout_support import ENDPOINTS, SHAS, count_fallback_sends, event, fanout_app
from tests.support import UNIT, running_server

pytestmark = [pytest.mark.integration, pytest.mark.node]

HERE = Path(__file__).parent
CLIENT = HERE / "ws_client.mjs"
HOW = "run `bash scripts/ensure-node-clients.sh` (Node 20 and `npm ci` in tests/clients)"

#: ws's perMessageDeflate option, by name.
OFFERS: dict[str, Any] = {
    "default": True,
    "no-context": {"serverNoContextTakeover": True, "clientNoContextTakeover": True},
    "window-9": {"serverMaxWindowBits": 9},
}


def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.fail(f"node is not installed: {HOW}")
    if not (HERE / "node_modules" / "ws" / "package.json").is_file():
        pytest.fail(f"the ws package is not installed: {HOW}")
    return executable


class NodeClient:
    """One ``ws_client.mjs`` process: wait for it to be ready, then for its report."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout * UNIT)
        if not raw:
            assert self.process.stderr is not None
            error = await self.process.stderr.read()
            raise AssertionError(f"the node client ended early: {error.decode()[-2000:]}")
        value: dict[str, Any] = orjson.loads(raw)
        return value

    async def ready(self) -> dict[str, Any]:
        line = await self.line(10)
        assert line["event"] == "ready", line
        return line

    async def report(self) -> dict[str, Any]:
        line = await self.line(40)
        assert line["event"] == "done", line
        assert line["error"] is None, line["error"]
        return line


@asynccontextmanager
async def node_client(url: str, **config: Any) -> AsyncIterator[NodeClient]:
    config = {"url": url, "shas": list(SHAS), "timeoutMs": 30_000 * UNIT, **config}
    process = await asyncio.create_subprocess_exec(
        node(),
        str(CLIENT),
        orjson.dumps(config).decode(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeClient(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def fanout(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    async with running_server(fanout_app(service)) as url:
        yield service, url


async def burst(service: WebSocketService, first: int, count: int) -> None:
    for n in range(first, first + count):
        await service.broadcast(event(n), topic="t")
        await asyncio.sleep(0)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("offer", OFFERS)
async def test_ws_reads_every_compressed_length_class_with_acks_and_pongs_interleaved(
    endpoint: str, offer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    count, chatter = 12, 10
    async with (
        fanout() as (service, url),
        node_client(url + endpoint, count=count, chatter=chatter, deflate=OFFERS[offer]) as client,
    ):
        ready = await client.ready()
        assert "permessage-deflate" in ready["extensions"]
        assert "server_no_context_takeover" in ready["extensions"]
        await burst(service, 0, count)
        report = await client.report()
    assert report["numbers"] == list(range(count))
    assert report["bad"] == 0
    expected = [f"p{i}" for i in range(chatter)] + [f"s{i}" for i in range(chatter)]
    assert sorted(report["replies"]) == sorted(expected)
    assert report["pongs"] == chatter
    assert report["wireBytes"] < 0.8 * report["textBytes"], "the broadcasts went compressed"
    assert sum(fallback.values()) == 0, "every frame went out on the shared direct path"


async def test_ws_that_pauses_its_socket_and_resumes_gets_every_frame_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    count = 60
    limits = SendLimits(max_messages=10_000, max_bytes=64 * 1024 * 1024)
    async with (
        fanout(send_limits=limits) as (service, url),
        node_client(f"{url}/ws", count=count, deflate=True, pauseAfter=4, pauseMs=1500) as client,
    ):
        await client.ready()
        (connection,) = service.connections.values()
        server_protocol: Any = connection.transport
        sock = server_protocol._websocket.scope["service.direct_send"].transport
        sock.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await burst(service, 0, count)
        report = await client.report()
    assert report["paused"]
    assert report["numbers"] == list(range(count))
    assert report["bad"] == 0
    assert sum(fallback.values()) > 0, "while paused its frames waited for uvicorn's send"


async def test_ws_gets_whole_frames_then_1001_when_the_service_stops_during_a_burst() -> None:
    async with (
        fanout() as (service, url),
        node_client(f"{url}/guide", count=10_000, deflate=True) as client,
    ):
        await client.ready()
        producing = asyncio.create_task(burst(service, 0, 400))
        await asyncio.sleep(0.05)
        await service.stop(timeout=5 * UNIT)
        producing.cancel()
        report = await client.report()
    assert report["closeCode"] == CloseCode.GOING_AWAY
    assert report["numbers"] == list(range(len(report["numbers"])))
    assert report["bad"] == 0
