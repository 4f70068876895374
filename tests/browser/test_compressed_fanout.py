"""Compressed fan-out received by headless Chromium, which always offers permessage-deflate.

A page served by :func:`tests.fanout_support.fanout_app` opens a plain browser
``WebSocket`` to one of the three endpoint shapes (the guide's own route among
them), checks every broadcast's padding with ``crypto.subtle`` against the
SHA-256 of its kind, sends envelope pings and subscribe requests while the burst
arrives, can block its main thread (so the browser stops taking frames) and
resume, and reports what arrived. The browser's own WebSocket stack rejects any
frame that breaks RFC 6455/7692 by closing with 1002/1006, which fails the test.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from service import CloseCode, SendLimits, WebSocketService
from tests.fanout_support import ENDPOINTS, SHAS, count_fallback_sends, event, fanout_app
from tests.support import UNIT, running_server

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>compressed fan-out</title>
<script>
const SHAS = %s;
const hex = (buffer) =>
  Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

window.openClient = (path, options) => new Promise((ready, failed) => {
  const ws = new WebSocket(`ws://${location.host}${path}`);
  const result = {numbers: [], bad: 0, replies: [], extensions: null, closeCode: null};
  const checks = [];
  let subscribed = false;
  let done = null;
  window.client = {ws, result, until: (count) => new Promise((resolve) => {
    done = () => {
      if (result.closeCode !== null || result.numbers.length >= count &&
          result.replies.length >= 2 * (options.chatter || 0)) {
        Promise.all(checks).then(() => resolve(result));
        done = null;
      }
    };
    done();
  })};
  const talk = (i) => {
    if (i >= (options.chatter || 0) || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({type: "ping", id: `p${i}`}));
    ws.send(JSON.stringify({type: "subscribe", data: {topic: `x${i}`}, id: `s${i}`}));
    setTimeout(() => talk(i + 1), 2);
  };
  ws.onopen = () => { result.extensions = ws.extensions; };
  ws.onerror = () => failed(new Error("websocket error"));
  ws.onclose = (event) => { result.closeCode = event.code; if (done) done(); };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (!subscribed) {
      if (message.type === "connection_established") {
        ws.send(JSON.stringify({type: "ping", id: "ready"}));
      } else if (message.type === "pong" && message.id === "ready") {
        subscribed = true;
        ready(result.extensions);
        talk(0);
      }
      return;
    }
    if (message.type !== "custom") {
      result.replies.push(message.id || message.type);
    } else {
      const digest = crypto.subtle.digest("SHA-256", new TextEncoder().encode(message.data.pad));
      checks.push(digest.then((d) => { if (hex(d) !== SHAS[message.data.kind]) result.bad += 1; }));
      result.numbers.push(message.data.n);
      if (result.numbers.length === options.pauseAfter) {
        const until = performance.now() + options.pauseMs;  // the main thread stops
        while (performance.now() < until) {}
      }
    }
    if (done) done();
  };
});
</script>
"""


@asynccontextmanager
async def fanout(**options: Any) -> AsyncIterator[tuple[WebSocketService, str]]:
    options.setdefault("heartbeat_interval", None)
    service = WebSocketService(**options)
    page = PAGE % ("[" + ",".join(f'"{sha}"' for sha in SHAS) + "]")
    async with running_server(fanout_app(service, page=page)) as url:
        yield service, url.replace("ws://", "http://")


@asynccontextmanager
async def page_at(browser: Browser, url: str) -> AsyncIterator[Page]:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{url}/page")
        yield page
        assert errors == []
    finally:
        await context.close()


async def burst(service: WebSocketService, first: int, count: int) -> None:
    for n in range(first, first + count):
        await service.broadcast(event(n), topic="t")
        await asyncio.sleep(0)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_chromium_reads_every_compressed_length_class_with_replies_interleaved(
    browser: Browser, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    count, chatter = 12, 10
    async with fanout() as (service, url), page_at(browser, url) as page:
        extensions = await page.evaluate(
            "([path, options]) => openClient(path, options)", [endpoint, {"chatter": chatter}]
        )
        assert "permessage-deflate" in extensions
        assert "server_no_context_takeover" in extensions
        waiting = asyncio.ensure_future(page.evaluate(f"client.until({count})"))
        await burst(service, 0, count)
        result = await asyncio.wait_for(waiting, 30 * UNIT)
    assert result["closeCode"] is None
    assert result["numbers"] == list(range(count))
    assert result["bad"] == 0
    expected = [f"p{i}" for i in range(chatter)] + [f"s{i}" for i in range(chatter)]
    assert sorted(result["replies"]) == sorted(expected)
    assert sum(fallback.values()) == 0, "every frame went out on the shared direct path"


async def test_chromium_that_stops_taking_frames_and_resumes_gets_every_one_in_order(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = count_fallback_sends(monkeypatch)
    count = 60
    limits = SendLimits(max_messages=10_000, max_bytes=64 * 1024 * 1024)
    async with fanout(send_limits=limits) as (service, url), page_at(browser, url) as page:
        await page.evaluate(
            "([path, options]) => openClient(path, options)",
            ["/guide", {"pauseAfter": 4, "pauseMs": 1500}],
        )
        (connection,) = service.connections.values()
        server_protocol: Any = connection.transport
        sock = server_protocol._websocket.scope["service.direct_send"].transport
        sock.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        waiting = asyncio.ensure_future(page.evaluate(f"client.until({count})"))
        await burst(service, 0, count)
        result = await asyncio.wait_for(waiting, 30 * UNIT)
    assert result["closeCode"] is None
    assert result["numbers"] == list(range(count))
    assert result["bad"] == 0
    assert sum(fallback.values()) > 0, "while it did not read, its frames waited for uvicorn"


async def test_chromium_gets_whole_frames_then_1001_when_the_service_stops_mid_burst(
    browser: Browser,
) -> None:
    async with fanout() as (service, url), page_at(browser, url) as page:
        await page.evaluate("([path, options]) => openClient(path, options)", ["/ws", {}])
        waiting = asyncio.ensure_future(page.evaluate("client.until(100000)"))
        producing = asyncio.create_task(burst(service, 0, 400))
        await asyncio.sleep(0.05)
        await service.stop(timeout=5 * UNIT)
        producing.cancel()
        result = await asyncio.wait_for(waiting, 30 * UNIT)
    assert result["closeCode"] == CloseCode.GOING_AWAY
    assert result["numbers"] == list(range(len(result["numbers"])))
    assert result["bad"] == 0
