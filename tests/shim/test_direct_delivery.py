"""The shim on the fast path: legacy payloads encoded once per broadcast, written directly.

Behind ``DirectSendMiddleware`` the shim's legacy port sends each broadcast's
Starlette ``send_json`` text, encoded once for all recipients, and its service
port records or writes without a coroutine. What clients receive must not change.
"""

from __future__ import annotations

import pytest

from legacy.producers import training_update_payload
from service import WebSocketService
from service.directsend import DirectSendMiddleware
from shim.diff import DiffConfig, Differ
from shim.manager import CompatWebSocketManager
from shim.stages import FixedStages, Stage
from tests.shim.test_manager_server import clients, drain, legacy_app
from tests.support import running_server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stage", list(Stage))
async def test_a_producer_reusing_one_mutated_dict_is_sent_each_version(stage: Stage) -> None:
    service = WebSocketService(heartbeat_interval=None)
    differ = Differ(DiffConfig(settle_seconds=0.1))
    manager = CompatWebSocketManager(
        service=service, decider=FixedStages(default=stage, sample_rate=1.0), differ=differ
    )
    app = legacy_app(manager)
    app.add_middleware(DirectSendMiddleware)
    async with running_server(app) as url:
        old, new = await clients(url)
        assert all(route.write_now is not None for route in manager.routes())
        payload = training_update_payload("Cognate", 0.0, "epoch 0", "running")
        for step in range(1, 6):  # the same dict object each time, as a careless producer does
            payload["progress"] = step / 10
            payload["message"] = f"epoch {step}"
            await manager.broadcast(payload)

        steps = [0.1, 0.2, 0.3, 0.4, 0.5]
        old_frames = await drain(old, 5)
        assert [frame["progress"] for frame in old_frames] == steps
        assert [frame["message"] for frame in old_frames] == [f"epoch {i}" for i in range(1, 6)]
        new_frames = await drain(new, 5)
        assert [frame["data"]["progress"] for frame in new_frames] == steps

        await manager.stop()
        if stage.compares:
            assert differ.unexpected_total == 0
            # 5 events x 2 clients, each pair counts both of its deliveries
            assert differ.counters()["/ws"]["matched"] == 20
        await old.close()
        await new.close()
    manager.close()
