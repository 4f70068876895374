"""shim.ops.migration_router behind real uvicorn, in an app written as an adopting team would.

The team's app is its own: its WebSocket endpoint, its manager, its operator
check. It only does ``app.include_router(migration_router(manager, token=...))``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

from service import WebSocketService
from shim.diff import Differ
from shim.manager import CompatWebSocketManager
from shim.ops import migration_router
from shim.stages import FixedStages, Stage
from tests.support import UNIT, connect, running_server

pytestmark = pytest.mark.integration

TOKEN = "s3cret-operator-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}
PATHS = ("/ops/migration", "/ops/stats", "/ops/diff", "/ops/diff/report", "/metrics")


@dataclass
class Served:
    manager: CompatWebSocketManager
    stages: FixedStages
    http: httpx.AsyncClient
    ws_url: str


def team_app(manager: CompatWebSocketManager, **router_options: Any) -> FastAPI:
    """Another team's backend: its own endpoint code, the toolkit's router included."""
    app = FastAPI()

    @app.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        await manager.connect(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    app.include_router(migration_router(manager, **router_options))
    return app


@asynccontextmanager
async def served(**router_options: Any) -> AsyncIterator[Served]:
    stages = FixedStages(default=Stage.LEGACY)
    manager = CompatWebSocketManager(
        service=WebSocketService(heartbeat_interval=None),
        decider=stages,
        differ=Differ(),
        endpoint_topics={"/live": ("training",)},
    )
    async with (
        running_server(team_app(manager, **router_options)) as url,
        httpx.AsyncClient(base_url="http" + url.removeprefix("ws"), timeout=5 * UNIT) as http,
    ):
        yield Served(manager, stages, http, url)
    await manager.stop()
    manager.close()


async def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge() -> None:
    async with served(token=TOKEN) as app:
        # Non-ASCII bytes as well: compare_digest on str would raise TypeError on them.
        every: list[dict[bytes, bytes]] = [
            {},
            {b"authorization": b"Bearer wrong"},
            {b"authorization": f"Bearer {TOKEN}x".encode()},
            {b"authorization": f"Basic {TOKEN}".encode()},
            {b"authorization": b"Bearer"},
            {b"authorization": "Bearer ünïcode".encode()},
        ]
        for headers in every:
            for path in PATHS:
                answer = await app.http.get(path, headers=headers)
                assert answer.status_code == 401, (path, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in answer.json()["detail"]


async def test_the_right_token_gets_stats_and_every_route() -> None:
    async with served(token=TOKEN) as app:
        ws = await connect(f"{app.ws_url}/live")
        try:
            answer = await app.http.get("/ops/stats", headers=BEARER)
            assert answer.status_code == 200
            stats = answer.json()
            assert set(stats) == {"service", "shim"}
            assert stats["shim"]["connections"] == 1
            assert stats["shim"]["endpoints"]["/live"]["delivered_by"] == {"legacy": 1}

            state = (await app.http.get("/ops/migration", headers=BEARER)).json()
            assert state["editable"] is False
            assert state["endpoints"] == {
                "/live": {
                    "stage": "legacy",
                    "split": "legacy 100.0%",
                    "clients": {"legacy": 1, "new": 0},
                }
            }

            metrics = await app.http.get("/metrics", headers=BEARER)
            assert metrics.status_code == 200
            assert 'ws_connections{endpoint="/live",path="legacy"} 1.0' in metrics.text
        finally:
            await ws.close()


async def test_diff_and_its_report_in_json_and_markdown() -> None:
    async with served(token=TOKEN) as app:
        diff = await app.http.get("/ops/diff", headers=BEARER, params={"limit": 5})
        assert diff.status_code == 200
        assert set(diff.json()) == {"counters", "unexpected_total", "recent"}

        markdown = await app.http.get(
            "/ops/diff/report", headers=BEARER, params={"format": "markdown"}
        )
        assert markdown.status_code == 200
        assert markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text.strip()

        as_json = await app.http.get("/ops/diff/report", headers=BEARER)
        assert as_json.status_code == 200
        assert as_json.headers["content-type"] == "application/json"
        assert isinstance(as_json.json(), dict)

        bad = await app.http.get("/ops/diff/report", headers=BEARER, params={"format": "xml"})
        assert bad.status_code == 422


async def test_without_a_token_every_route_is_refused_with_how_to_configure_one() -> None:
    async with served(token=None) as app:
        for path in PATHS:
            for headers in ({}, BEARER):
                answer = await app.http.get(path, headers=headers)
                assert answer.status_code == 403, path
                assert "WS_MIGRATION_OPS_TOKEN" in answer.json()["detail"]
        answer = await app.http.post("/ops/stage", json={"endpoint": "/live", "stage": "new"})
        assert answer.status_code == 403
        assert app.stages.stages == {}


async def test_allow_unauthenticated_is_explicit() -> None:
    async with served(allow_unauthenticated=True) as app:
        for path in PATHS:
            assert (await app.http.get(path)).status_code == 200, path


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_an_authorize_callable_admits_the_apps_own_operators(asynchronous: bool) -> None:
    def is_operator(request: Request) -> bool:
        return request.headers.get("x-operator-claim") == "ops"

    async def is_operator_async(request: Request) -> bool:
        return is_operator(request)

    check = is_operator_async if asynchronous else is_operator
    async with served(authorize=check) as app:
        answer = await app.http.get("/ops/stats", headers={"x-operator-claim": "ops"})
        assert answer.status_code == 200
        answer = await app.http.get("/ops/stats", headers={"x-operator-claim": "viewer"})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert (await app.http.get("/ops/stats")).status_code == 401


async def test_with_a_token_and_authorize_either_admits() -> None:
    async with served(token=TOKEN, authorize=lambda r: "x-operator-claim" in r.headers) as app:
        assert (await app.http.get("/ops/stats", headers=BEARER)).status_code == 200
        answer = await app.http.get("/ops/stats", headers={"x-operator-claim": "1"})
        assert answer.status_code == 200
        assert (await app.http.get("/ops/stats")).status_code == 401


async def test_stage_changes_go_through_set_stage() -> None:
    changes: list[tuple[str, Stage, int]] = []

    async def set_stage(endpoint: str, stage: Stage, percent: int) -> None:
        if percent != 100:
            raise ValueError("FixedStages only knows whole endpoints")
        changes.append((endpoint, stage, percent))
        stages.set(endpoint, stage)

    async with served(token=TOKEN, set_stage=set_stage) as app:
        stages = app.stages
        # The guard runs before the body is parsed: an anonymous caller learns nothing.
        assert (await app.http.post("/ops/stage", content=b"{not json")).status_code == 401
        answer = await app.http.post(
            "/ops/stage", headers=BEARER, json={"endpoint": "/live", "stage": "purple"}
        )
        assert answer.status_code == 422
        answer = await app.http.post(
            "/ops/stage", headers=BEARER, json={"endpoint": "/nope", "stage": "live"}
        )
        assert answer.status_code == 404
        assert answer.json()["detail"] == "unknown endpoint '/nope'"
        answer = await app.http.post(
            "/ops/stage", headers=BEARER, json={"endpoint": "/live", "stage": "live", "percent": 5}
        )
        assert answer.status_code == 400
        assert changes == []

        answer = await app.http.post(
            "/ops/stage", headers=BEARER, json={"endpoint": "/live", "stage": "shadow"}
        )
        assert answer.status_code == 200
        assert answer.json() == {"endpoint": "/live", "stage": "shadow", "percent": 100}
        state = (await app.http.get("/ops/migration", headers=BEARER)).json()
        assert state["editable"] is True
        assert state["endpoints"]["/live"]["stage"] == "shadow"


async def test_read_only_router_answers_409_and_options_reshape_it() -> None:
    async with served(
        token=TOKEN,
        prefix="/admin/ws",
        metrics=False,
        read_only_reason="change stages in Unleash",
        extra_state=lambda: {"flags_mode": "server"},
    ) as app:
        answer = await app.http.post(
            "/admin/ws/stage", headers=BEARER, json={"endpoint": "/live", "stage": "new"}
        )
        assert answer.status_code == 409
        assert answer.json()["detail"] == "change stages in Unleash"
        state = (await app.http.get("/admin/ws/migration", headers=BEARER)).json()
        assert state["flags_mode"] == "server" and state["editable"] is False
        assert (await app.http.get("/metrics", headers=BEARER)).status_code == 404
        assert (await app.http.get("/ops/stats", headers=BEARER)).status_code == 404


@pytest.mark.parametrize(
    "options",
    [
        {"token": ""},
        {"token": TOKEN, "allow_unauthenticated": True},
        {"authorize": lambda r: True, "allow_unauthenticated": True},
        {"prefix": "ops"},
        {"prefix": "/ops/"},
    ],
)
def test_contradictory_configuration_is_refused(options: dict[str, Any]) -> None:
    manager = CompatWebSocketManager(service=WebSocketService(heartbeat_interval=None))
    try:
        with pytest.raises(ValueError):
            migration_router(manager, **options)
    finally:
        manager.close()
