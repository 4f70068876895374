"""The decider in server mode when no server answers: bootstrap, one warning, no block."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from flags import FlagSettings, UnleashStageDecider, default_document, set_endpoint_stage
from shim.stages import Stage
from tests.flags.helpers import capture_flag_logs, write_toggles
from tests.support import UNIT, free_port


async def test_unreachable_server_keeps_the_bootstrap_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = write_toggles(
        tmp_path / "toggles.json", set_endpoint_stage(default_document(), "/ws", Stage.SHADOW)
    )
    settings = FlagSettings(
        toggles_file=bootstrap,
        unleash_url=f"http://127.0.0.1:{free_port()}/api",
        api_token="*:development.unused",
        refresh_interval=1,
    )
    decider = UnleashStageDecider(settings=settings)
    caplog.set_level(logging.INFO)
    with capture_flag_logs() as logs:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await decider.start()
        assert loop.time() - started < 2 * UNIT
        try:
            assert decider.decide("/ws", "k", {}).stage is Stage.SHADOW
            await asyncio.sleep(2.5)  # two or three more failed polls
            assert decider.reachable is False
            assert decider.decide("/ws", "k", {}).stage is Stage.SHADOW
        finally:
            await decider.stop()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["unleash_unreachable"]
    assert warnings[0]["keeping"] == "bootstrap toggles"
    assert "Connection refused" in warnings[0]["reason"]
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert logging.getLogger("UnleashClient").filters == []


async def test_unusable_bootstrap_means_the_default_stage(tmp_path: Path) -> None:
    settings = FlagSettings(
        toggles_file=tmp_path / "missing.json",
        unleash_url=f"http://127.0.0.1:{free_port()}/api",
        report_to_server=False,
    )
    decider = UnleashStageDecider(settings=settings)
    with capture_flag_logs() as logs:
        await decider.start()
        await decider.stop()
    assert decider.decide("/ws", "k", {}).stage is Stage.LEGACY
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "flags_bootstrap_unusable",
        "unleash_unreachable",
    ]
