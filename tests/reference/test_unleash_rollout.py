"""The reference backend driven by a real Unleash server, with clients connected.

The server is ``scripts/unleash/ensure-unleash.sh``'s (the ``unleash`` session
fixture of the flag tests). Each test owns a stage toggle and a kill switch named
with a unique prefix (``names``), so the shared server's own
``ws-migration-stage`` is never touched; the backend is configured with those
names, a client token and a 1 s refresh interval, and bootstraps from a file
that knows neither toggle (everything legacy until the first fetch).

A flip made through the Admin API reaches the backend within the server's
revision tick plus one refresh interval; the shim then re-routes every live
connection in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from flags import FlagSettings
from shim.stages import Stage
from tests.flags.helpers import write_toggles
from tests.flags.test_unleash_server import Admin, Server, stage_rule
from tests.reference.support import (
    Backend,
    Client,
    all_receive,
    eventually,
    serve_reference,
)

pytestmark = [pytest.mark.unleash, pytest.mark.integration, pytest.mark.timeout(300)]

REFRESH = 1
#: Flip -> re-routed: one refresh interval plus one second, the server's revision
#: tick (a poll that lands just before the tick sees the change a refresh later),
#: plus the fetch itself and the hand-off to the event loop. Observed: 0.8-1.85 s.
FOLLOW = REFRESH + 1.0 + 0.5


@pytest.fixture
async def toggles_owned(admin: Admin) -> AsyncIterator[Admin]:
    """``admin``, whose toggles are archived and then deleted for good afterwards."""
    yield admin
    created, admin.created = list(admin.created), []
    for name in created:
        answer = await admin.http.delete(f"/admin/projects/default/features/{name}")
        assert answer.status_code == 202, answer.text  # archived
        answer = await admin.http.delete(f"/admin/archive/{name}")
        assert answer.status_code in (200, 404), answer.text


@pytest.fixture
def server_settings(unleash: Server, names: tuple[str, str], tmp_path: Path) -> FlagSettings:
    """Server mode on the test's own toggles; the bootstrap file knows neither."""
    return FlagSettings(
        toggles_file=write_toggles(tmp_path / "bootstrap.json"),
        unleash_url=unleash.url,
        api_token=unleash.client_token,
        app_name="ws-migration-reference-tests",
        refresh_interval=REFRESH,
        report_to_server=False,
        stage_toggle=names[0],
        kill_switch_toggle=names[1],
    )


async def traffic_reaches(backend: Backend, clients: list[Client]) -> None:
    marks = [len(c.frames) for c in clients]
    await all_receive(clients, await backend.train(1), marks)
    assert all(c.is_open for c in clients)


async def flip(
    backend: Backend,
    change: Awaitable[None],
    expected: dict[str, Stage],
    what: str,
) -> float:
    """Apply ``change`` (an Admin API coroutine) and wait until routes follow."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await change
    await backend.rerouted(expected, timeout=FOLLOW)
    took = loop.time() - started
    print(f"\nunleash {what}: re-routed {took:.2f} s from the Admin API call")
    return took


async def test_admin_api_flips_reroute_live_connections(
    unleash: Server,
    toggles_owned: Admin,
    names: tuple[str, str],
    server_settings: FlagSettings,
) -> None:
    admin = toggles_owned
    stage, kill = names
    await admin.create(stage)
    rule = await admin.add_strategy(stage, stage_rule(stage, "/ws/training", Stage.LEGACY))
    await admin.switch(stage, True)
    await admin.create(kill, "kill-switch")
    await admin.add_strategy(
        kill, {"name": "flexibleRollout", "parameters": {"rollout": "100", "groupId": kill}}
    )

    async def set_stage(to: Stage) -> None:
        await admin.update_strategy(stage, rule, stage_rule(stage, "/ws/training", to))

    stopped = False
    async with serve_reference(server_settings) as backend:
        decider = backend.app.state.decider
        assert decider.reachable is True
        clients = [
            await backend.client("/ws/training", "old"),
            await backend.client("/ws/training", "new"),
            await backend.client("/ws", "new"),
        ]
        ids = backend.connection_ids()
        assert backend.stages() == {Stage.LEGACY}
        answer = await backend.http.post("/ops/stage", json={"endpoint": "/ws", "stage": "new"})
        assert answer.status_code == 409, "stages must be changed in Unleash, not the file"

        # Rollout and rollback, through the Admin API.
        live = {"/ws/training": Stage.LIVE, "/ws": Stage.LEGACY}
        legacy = {"/ws/training": Stage.LEGACY, "/ws": Stage.LEGACY}
        await flip(backend, set_stage(Stage.LIVE), live, "rollout to live")
        state = await backend.migration()
        assert state["flags_mode"] == "server" and state["editable"] is False
        assert state["endpoints"]["/ws/training"]["clients"] == {"legacy": 0, "new": 2}
        await traffic_reaches(backend, clients)
        await flip(backend, set_stage(Stage.LEGACY), legacy, "rollback to legacy")
        await traffic_reaches(backend, clients)

        # The kill switch beats the stage toggle.
        await flip(backend, set_stage(Stage.LIVE), live, "rollout to live")
        await flip(backend, admin.switch(kill, True), legacy, "kill switch on")
        assert (await backend.migration())["endpoints"]["/ws/training"]["stage"] == "legacy"
        await traffic_reaches(backend, clients)
        await flip(backend, admin.switch(kill, False), live, "kill switch off")

        # Outage: the last fetched toggles stay in force and clients keep receiving.
        try:
            await asyncio.to_thread(unleash.run_script, "stop")
            stopped = True
            await eventually(lambda: decider.reachable is False, timeout=FOLLOW + 1)
            assert backend.stages("/ws/training") == {Stage.LIVE}
            await traffic_reaches(backend, clients)
            await asyncio.sleep(REFRESH)  # another failed poll: still live
            assert backend.stages("/ws/training") == {Stage.LIVE}
            await traffic_reaches(backend, clients)
        finally:
            if stopped:
                await asyncio.to_thread(unleash.run_script, "start")
        await eventually(lambda: decider.reachable is True, timeout=FOLLOW + 1)
        assert backend.stages("/ws/training") == {Stage.LIVE}
        await flip(backend, set_stage(Stage.LEGACY), legacy, "rollback after the outage")
        await traffic_reaches(backend, clients)
        assert backend.connection_ids() == ids, "a client reconnected"
