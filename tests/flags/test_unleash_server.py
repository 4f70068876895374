"""The decider against a real Unleash server (started by scripts/unleash/ensure-unleash.sh).

Each test owns toggles named with a unique prefix, flips them through the Admin API
and waits for the decider to follow. Flips reach the decider within the server's
revision tick (1 s) plus the client's refresh interval (1 s here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flags import (
    FlagSettings,
    UnleashStageDecider,
    default_document,
    set_endpoint_stage,
    set_kill_switch,
    to_import_format,
)
from shim.stages import Stage
from tests.flags.helpers import Changes, capture_flag_logs, decider_for, write_toggles
from tests.support import UNIT

pytestmark = [pytest.mark.unleash, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "unleash" / "ensure-unleash.sh"
IMPORT_FILE = ROOT / "flags" / "unleash-import.json"
ENV = "development"
REFRESH = 1
#: Server revision tick + refresh interval + slack for a loaded machine.
FOLLOW = REFRESH + 2.0


@dataclasses.dataclass(frozen=True)
class Server:
    url: str  # the API base, ".../api"
    admin_token: str
    client_token: str

    def run_script(self, *args: str) -> str:
        """Run ensure-unleash.sh; fail the test (never skip) when it fails."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            pytest.fail(f"ensure-unleash.sh {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout.strip()


@pytest.fixture(scope="session")
def unleash() -> Iterator[Server]:
    server = Server(
        url="",
        admin_token=os.environ.get("UNLEASH_ADMIN_TOKEN", "*:*.ws-migration-admin-token"),
        client_token=os.environ.get(
            "UNLEASH_CLIENT_TOKEN", "*:development.ws-migration-client-token"
        ),
    )
    url = server.run_script("start")
    server = dataclasses.replace(server, url=url)
    with httpx.Client(headers={"Authorization": server.admin_token}) as http:
        # Strategies constrain on "endpoint"; the field exists once per database.
        answer = http.post(
            f"{url}/admin/context",
            json={"name": "endpoint", "description": "WebSocket endpoint path"},
        )
        assert answer.status_code in (201, 409), answer.text
    yield server


class Admin:
    """The few Admin API calls the tests need, for one project and environment."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.created: list[str] = []

    def _feature(self, name: str) -> str:
        return f"/admin/projects/default/features/{name}"

    async def create(self, name: str, kind: str = "operational") -> None:
        answer = await self.http.post(
            "/admin/projects/default/features", json={"name": name, "type": kind}
        )
        assert answer.status_code == 201, answer.text
        self.created.append(name)

    async def add_strategy(self, name: str, strategy: dict[str, Any]) -> str:
        answer = await self.http.post(
            f"{self._feature(name)}/environments/{ENV}/strategies", json=strategy
        )
        assert answer.status_code == 200, answer.text
        strategy_id: str = answer.json()["id"]
        return strategy_id

    async def update_strategy(self, name: str, strategy_id: str, strategy: dict[str, Any]) -> None:
        answer = await self.http.put(
            f"{self._feature(name)}/environments/{ENV}/strategies/{strategy_id}", json=strategy
        )
        assert answer.status_code == 200, answer.text

    async def switch(self, name: str, on: bool) -> None:
        answer = await self.http.post(
            f"{self._feature(name)}/environments/{ENV}/{'on' if on else 'off'}"
        )
        assert answer.status_code == 200, answer.text

    async def archive_all(self) -> None:
        for name in self.created:
            await self.http.delete(self._feature(name))


def stage_rule(
    toggle: str, endpoint: str, stage: Stage, *, sample_rate: float | None = None
) -> dict[str, Any]:
    """The strategy the embedded edits write, as the Admin API takes it."""
    doc = set_endpoint_stage(
        {"features": []}, endpoint, stage, sample_rate=sample_rate, toggle=toggle
    )
    strategy: dict[str, Any] = doc["features"][0]["strategies"][0]
    return strategy


@pytest.fixture
async def admin(unleash: Server) -> AsyncIterator[Admin]:
    # No keep-alive: a test may stop and restart the server, and a pooled connection
    # to the old process fails the next request ("Server disconnected").
    async with httpx.AsyncClient(
        base_url=unleash.url,
        headers={"Authorization": unleash.admin_token},
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as http:
        api = Admin(http)
        yield api
        await api.archive_all()


@pytest.fixture
def names() -> tuple[str, str]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    return f"{prefix}-stage", f"{prefix}-kill"


@pytest.fixture
def settings(unleash: Server, names: tuple[str, str], tmp_path: Path) -> FlagSettings:
    # Bootstrap from a file without these toggles: decisions must come from the server.
    return FlagSettings(
        toggles_file=write_toggles(tmp_path / "bootstrap.json"),
        unleash_url=unleash.url,
        api_token=unleash.client_token,
        app_name="ws-migration-tests",
        refresh_interval=REFRESH,
        stage_toggle=names[0],
        kill_switch_toggle=names[1],
    )


async def follow(
    decider: UnleashStageDecider, changes: Changes, endpoint: str, stage: Stage
) -> float:
    """Wait until the decider sends ``endpoint`` to ``stage``; return how long it took.

    Every step must come with a listener call, and the whole within ``FOLLOW``.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(FOLLOW * UNIT):
        while decider.decide(endpoint, "k", {}).stage is not stage:
            await changes.wait(timeout=FOLLOW)
    return loop.time() - started


async def test_decider_follows_variant_flips_both_ways(
    admin: Admin, settings: FlagSettings, names: tuple[str, str]
) -> None:
    stage = names[0]
    await admin.create(stage)
    ws = await admin.add_strategy(stage, stage_rule(stage, "/ws", Stage.SHADOW, sample_rate=0.5))
    await admin.add_strategy(stage, stage_rule(stage, "/ws/training", Stage.LIVE))
    await admin.switch(stage, True)

    decider = UnleashStageDecider(settings=settings)
    changes = Changes()
    decider.add_listener(changes)
    await decider.start()
    try:
        await follow(decider, changes, "/ws", Stage.SHADOW)
        assert decider.decide("/ws", "k", {}).sample_rate == 0.5
        assert decider.decide("/ws/training", "k", {}).stage is Stage.LIVE

        await admin.update_strategy(stage, ws, stage_rule(stage, "/ws", Stage.LIVE))
        await follow(decider, changes, "/ws", Stage.LIVE)
        assert decider.decide("/ws", "k", {}).sample_rate == 1.0

        await admin.update_strategy(stage, ws, stage_rule(stage, "/ws", Stage.SHADOW))
        await follow(decider, changes, "/ws", Stage.SHADOW)
        assert decider.decide("/ws/training", "k", {}).stage is Stage.LIVE

        await admin.switch(stage, False)  # toggle off: the default everywhere
        await follow(decider, changes, "/ws/training", Stage.LEGACY)
        assert decider.reachable is True
    finally:
        await decider.stop()


async def test_kill_switch_through_the_server(
    admin: Admin, settings: FlagSettings, names: tuple[str, str]
) -> None:
    stage, kill = names
    await admin.create(stage)
    await admin.add_strategy(stage, stage_rule(stage, "/ws", Stage.LIVE))
    await admin.switch(stage, True)
    await admin.create(kill, "kill-switch")
    await admin.add_strategy(
        kill, {"name": "flexibleRollout", "parameters": {"rollout": "100", "groupId": kill}}
    )

    decider = UnleashStageDecider(settings=settings)
    changes = Changes()
    decider.add_listener(changes)
    await decider.start()
    try:
        await follow(decider, changes, "/ws", Stage.LIVE)
        await admin.switch(kill, True)
        await follow(decider, changes, "/ws", Stage.LEGACY)
        await admin.switch(kill, False)
        await follow(decider, changes, "/ws", Stage.LIVE)
    finally:
        await decider.stop()


async def test_server_outage_keeps_last_known_toggles_and_recovers(
    unleash: Server, admin: Admin, settings: FlagSettings, names: tuple[str, str]
) -> None:
    stage = names[0]
    await admin.create(stage)
    ws = await admin.add_strategy(stage, stage_rule(stage, "/ws", Stage.SHADOW))
    await admin.switch(stage, True)

    decider = UnleashStageDecider(settings=settings)
    changes = Changes()
    decider.add_listener(changes)
    with capture_flag_logs() as logs:
        await decider.start()
        try:
            await follow(decider, changes, "/ws", Stage.SHADOW)
            await asyncio.to_thread(unleash.run_script, "stop")
            try:
                async with asyncio.timeout(FOLLOW * UNIT):
                    while decider.reachable is not False:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(2.5 * REFRESH)  # more failed polls: still one warning
                assert decider.decide("/ws", "k", {}).stage is Stage.SHADOW
            finally:
                await asyncio.to_thread(unleash.run_script, "start")
            async with asyncio.timeout(FOLLOW * UNIT):
                while decider.reachable is not True:
                    await asyncio.sleep(0.05)
            assert decider.decide("/ws", "k", {}).stage is Stage.SHADOW
            await admin.update_strategy(stage, ws, stage_rule(stage, "/ws", Stage.LIVE))
            await follow(decider, changes, "/ws", Stage.LIVE)
        finally:
            await decider.stop()
    outage = [e for e in logs if e["event"].startswith("unleash_")]
    assert [e["event"] for e in outage] == ["unleash_unreachable", "unleash_reachable"]
    assert outage[0]["log_level"] == "warning"
    assert outage[0]["keeping"] == "last fetched toggles"


async def test_import_format_evaluates_like_the_embedded_file(
    unleash: Server, admin: Admin, settings: FlagSettings, names: tuple[str, str], tmp_path: Path
) -> None:
    stage, kill = names
    doc = set_endpoint_stage(default_document(), "/ws", Stage.SHADOW, sample_rate=0.5, toggle=stage)
    doc = set_endpoint_stage(doc, "/ws/training", Stage.SHADOW, toggle=stage)
    doc = set_endpoint_stage(doc, "/ws/training", Stage.LIVE, percent=25, toggle=stage)
    doc = set_kill_switch(doc, False, toggle=kill)
    doc["features"] = [f for f in doc["features"] if f["name"] in names]
    admin.created += list(names)

    async with httpx.AsyncClient(base_url=unleash.url.removesuffix("/api"), timeout=10) as http:
        login = await http.post(
            "/auth/simple/login",
            json={
                "username": os.environ.get("UNLEASH_ADMIN_USER", "admin"),
                "password": os.environ.get("UNLEASH_ADMIN_PASSWORD", "unleash4all"),
            },
        )
        assert login.status_code == 200, login.text
        shipped = {"project": "default", "environment": ENV}
        shipped["data"] = json.loads(IMPORT_FILE.read_text())
        checked = await http.post("/api/admin/features-batch/validate", json=shipped)
        assert checked.status_code == 200 and checked.json()["errors"] == [], checked.text
        ours = {"project": "default", "environment": ENV, "data": to_import_format(doc)}
        imported = await http.post("/api/admin/features-batch/import", json=ours)
        assert imported.status_code == 200, imported.text

    embedded_file = write_toggles(tmp_path / "embedded.json", doc)
    endpoints = ["/ws", "/ws/training", "/ws/other"]
    async with decider_for(embedded_file, stage_toggle=stage, kill_switch_toggle=kill) as local:
        expected = local.effective_stages(endpoints, sample_keys=2000)

    decider = UnleashStageDecider(settings=settings)
    changes = Changes()
    decider.add_listener(changes)
    await decider.start()
    try:
        await follow(decider, changes, "/ws", Stage.SHADOW)
        assert decider.effective_stages(endpoints, sample_keys=2000) == expected
    finally:
        await decider.stop()
