"""What the reference backend's REST API keeps stays bounded (issue 13).

The body of ``POST /api/training/start`` and ``POST /api/models`` is refused with
413 over ``max_body_bytes`` before it is read (``reference.limits``); finished
sessions beyond ``max_sessions`` and models beyond ``max_models`` are evicted,
oldest first, and running sessions never are (``reference.services``).

Most tests run the real backend behind uvicorn on 127.0.0.1; the raw-socket ones
send a request whose body never ends, so only a server that answers before
reading it passes them. The middleware is also tested as data in, data out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from flags import FlagSettings
from reference.config import Settings
from reference.limits import BodyLimitMiddleware
from reference.services import TrainingService
from tests.reference.support import Backend, eventually, fast_settings, serve_reference
from tests.support import UNIT

pytestmark = pytest.mark.integration

LIMIT = 16 * 1024  # the documented default
MIB = 1024 * 1024


@pytest.fixture
async def bounded(toggles: Path) -> AsyncIterator[Backend]:
    """The backend with small caps: 3 running, 4 sessions kept, 3 models kept."""
    settings = fast_settings(max_running=3, max_sessions=4, max_models=3)
    flag_settings = FlagSettings(toggles_file=toggles, watch_interval=0.1)
    async with serve_reference(flag_settings, settings) as served:
        yield served


def training(backend: Backend) -> TrainingService:
    service: TrainingService = backend.app.state.training
    return service


async def session_ids(backend: Backend) -> list[str]:
    answer = await backend.http.get("/api/training")
    assert answer.status_code == 200, answer.text
    return [s["session_id"] for s in answer.json()["sessions"]]


def assert_too_large(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.json() == {
        "error": "request_too_large",
        "detail": f"request body over the limit of {LIMIT} bytes",
        "max_bytes": LIMIT,
    }


def training_body(size: int) -> bytes:
    """A valid start request of exactly ``size`` bytes (padded ``parameters``)."""
    head, tail = b'{"parameters":{"epochs_per_phase":1,"pad":"', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def raw_request(backend: Backend, head: str, *chunks: bytes) -> tuple[int, Any]:
    """Send ``head`` and ``chunks`` on a fresh socket, never finishing the body.

    Returns the status and JSON body of the response, which must come within
    5 units: a server that waits for the rest of the body fails the test.
    """
    url = httpx.URL(backend.http_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + b"".join(chunks))
        await writer.drain()
        async with asyncio.timeout(5 * UNIT):
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = orjson.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return status, body


# -- the body limit, behind uvicorn -------------------------------------------------


async def test_declared_oversize_body_is_refused_before_it_is_sent(backend: Backend) -> None:
    for path in ("/api/training/start", "/api/models"):
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {MIB}\r\n\r\n"
        )
        status, body = await raw_request(backend, head)  # not one byte of the body
        assert (status, body["error"], body["max_bytes"]) == (413, "request_too_large", LIMIT)
    assert await session_ids(backend) == []


async def test_chunked_oversize_body_is_refused_mid_stream(backend: Backend) -> None:
    head = (
        "POST /api/training/start HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (8192, b"x" * 8192)
    status, body = await raw_request(backend, head, *[chunk] * 3)  # 24 KiB, no last chunk
    assert (status, body["error"]) == (413, "request_too_large")
    assert await session_ids(backend) == []


async def test_oversize_parameters_over_httpx(backend: Backend) -> None:
    big = {"pad": "x" * MIB}
    assert_too_large(await backend.http.post("/api/training/start", json={"parameters": big}))
    assert_too_large(await backend.http.post("/api/models", json={"name": "m", **big}))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"parameters":{"pad":"'
        for _ in range(64):
            yield b"x" * LIMIT
        yield b'"}}'

    answer = await backend.http.post(
        "/api/training/start", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in answer.request.headers  # it really was chunked
    assert_too_large(answer)
    assert await session_ids(backend) == []
    # The connection that carried the refused bodies still serves requests.
    assert (await backend.http.get("/api/models")).json() == {"models": []}


async def test_bodies_up_to_the_limit_still_work(backend: Backend) -> None:
    headers = {"content-type": "application/json"}
    assert Settings().max_body_bytes == LIMIT
    answer = await backend.http.post(
        "/api/training/start", content=training_body(LIMIT), headers=headers
    )
    assert answer.status_code == 200, answer.text
    assert_too_large(
        await backend.http.post(
            "/api/training/start", content=training_body(LIMIT + 1), headers=headers
        )
    )
    assert await session_ids(backend) == [answer.json()["session_id"]]
    # Ordinary requests, with and without a body, are untouched.
    await backend.create_model("small")
    assert (await backend.http.post("/api/training/start")).status_code in (200, 429)
    assert (await backend.http.get("/api/training")).status_code == 200


async def test_fifty_megabyte_posts_leave_nothing_behind(backend: Backend) -> None:
    await backend.train()
    await backend.create_model("kept")
    sessions, models = await session_ids(backend), dict(backend.app.state.models.models)
    for i in range(50):
        pad = "x" * MIB
        if i % 2:
            answer = await backend.http.post("/api/models", json={"name": "m", "pad": pad})
        else:
            answer = await backend.http.post("/api/training/start", json={"parameters": {"p": pad}})
        assert_too_large(answer)
    assert await session_ids(backend) == sessions
    assert backend.app.state.models.models == models


# -- bounded retention, behind uvicorn ----------------------------------------------


async def test_finished_sessions_are_evicted_beyond_the_cap(bounded: Backend) -> None:
    started = []
    for _ in range(10):
        started.append(await bounded.train(epochs_per_phase=1))
        await eventually(lambda: training(bounded).running == 0, timeout=5)
        assert len(await session_ids(bounded)) <= 4
    assert await session_ids(bounded) == started[-4:]  # the newest, in start order
    # The service's retained last values (what a new subscriber is sent) follow.
    retained = await bounded.app.state.service.broker.last_values("training")
    assert {orjson.loads(p.payload)["data"]["session_id"] for p in retained} == set(started[-4:])


async def test_running_sessions_are_kept_and_capped(bounded: Backend) -> None:
    long_ones = [await bounded.train(epochs_per_phase=100) for _ in range(2)]
    for _ in range(5):
        await bounded.train(epochs_per_phase=1)
        await eventually(lambda: training(bounded).running == 2, timeout=5)
    kept = await session_ids(bounded)
    assert len(kept) == 4 and kept[:2] == long_ones

    third = await bounded.train(epochs_per_phase=100)
    answer = await bounded.http.post("/api/training/start", json={"parameters": {}})
    assert answer.status_code == 429
    assert answer.json() == {"detail": "at most 3 sessions may run at once"}
    kept = await session_ids(bounded)
    assert len(kept) == 4 and kept[:2] == long_ones and kept[-1] == third


async def test_models_are_evicted_beyond_the_cap(bounded: Backend) -> None:
    created = [await bounded.create_model(f"m{i}") for i in range(7)]
    answer = await bounded.http.get("/api/models")
    assert [m["model_id"] for m in answer.json()["models"]] == created[-3:]


# -- configuration and the middleware alone -------------------------------------------


def test_caps_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings.from_env()
    assert (defaults.max_running, defaults.max_sessions, defaults.max_models) == (5, 100, 1000)
    assert defaults.max_body_bytes == LIMIT
    for name, value in [
        ("TRAINING_MAX_RUNNING", "2"),
        ("TRAINING_MAX_SESSIONS", "7"),
        ("MODELS_MAX_KEPT", "9"),
        ("API_MAX_BODY_BYTES", "0"),
    ]:
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.max_running, settings.max_sessions, settings.max_models) == (2, 7, 9)
    assert settings.max_body_bytes is None  # 0: off


def test_running_cap_must_fit_the_kept_cap() -> None:
    with pytest.raises(ValueError, match="max_running <= max_sessions"):
        TrainingService(None, None, max_running=5, max_sessions=4)  # type: ignore[arg-type]


async def refused_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the app was called with a refused body")


async def test_middleware_stops_reading_at_the_limit() -> None:
    pulled = 0

    async def endless() -> Message:
        nonlocal pulled
        pulled += 1
        assert pulled < 100, "the middleware kept reading past the limit"
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    limited = BodyLimitMiddleware(refused_app, max_bytes=4096, paths=["/p"])
    await limited({"type": "http", "path": "/p", "headers": []}, endless, send)
    assert pulled == 5  # 4 KiB fit, the fifth chunk passes the limit
    assert sent[0]["status"] == 413

    pulled, sent[:] = 0, []
    declared = [(b"content-length", b"4097")]
    await limited({"type": "http", "path": "/p", "headers": declared}, endless, send)
    assert pulled == 0 and sent[0]["status"] == 413


async def test_middleware_replays_a_body_within_the_limit() -> None:
    parts: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return parts.pop(0)

    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.extend([await receive(), await receive()])

    async def send(message: Message) -> None:
        raise AssertionError(f"unexpected {message}")

    await BodyLimitMiddleware(app, max_bytes=4, paths=["/p"])(
        {"type": "http", "path": "/p", "headers": []}, receive, send
    )
    assert seen == [
        {"type": "http.request", "body": b"abcd", "more_body": False},
        {"type": "http.disconnect"},
    ]
