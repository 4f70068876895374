"""The decider in embedded mode: the real Unleash engine over a local file."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from flags import (
    PACKAGED_TOGGLES_FILE,
    FlagSettings,
    UnleashStageDecider,
    default_document,
    set_endpoint_stage,
    set_kill_switch,
)
from shim.stages import RoutingDecision, Stage, StageDecider
from tests.flags.helpers import Changes, capture_flag_logs, decider_for, save, write_toggles
from tests.support import UNIT


def decide(decider: UnleashStageDecider, endpoint: str, key: str, **context: str) -> Stage:
    return decider.decide(endpoint, key, {"endpoint": endpoint, **context}).stage


async def test_shipped_defaults_route_everything_to_legacy(toggles_path: Path) -> None:
    async with decider_for(toggles_path) as decider:
        for endpoint in ("/ws", "/ws/training", "/elsewhere"):
            assert decider.decide(endpoint, "k", {}) == RoutingDecision(Stage.LEGACY, 1.0)


async def test_stages_are_per_endpoint_with_sample_rates(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.SHADOW, sample_rate=0.25)
    doc = set_endpoint_stage(doc, "/ws/training", Stage.LIVE)
    write_toggles(toggles_path, doc)
    async with decider_for(toggles_path) as decider:
        assert decider.decide("/ws", "k", {}) == RoutingDecision(Stage.SHADOW, 0.25)
        assert decider.decide("/ws/training", "k", {}) == RoutingDecision(Stage.LIVE, 1.0)
        assert decider.decide("/ws/other", "k", {}) == RoutingDecision(Stage.LEGACY, 1.0)


async def test_rollout_percentage_is_sticky_and_accurate(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.SHADOW)
    write_toggles(toggles_path, set_endpoint_stage(doc, "/ws", Stage.LIVE, percent=25))
    async with decider_for(toggles_path) as decider:
        stages = {f"conn-{i}": decide(decider, "/ws", f"conn-{i}") for i in range(10_000)}
        live = sum(stage is Stage.LIVE for stage in stages.values())
        assert abs(live / 10_000 - 0.25) <= 0.02
        assert set(stages.values()) == {Stage.LIVE, Stage.SHADOW}
        # The same key always lands in the same stage, in this engine and a new one.
        assert all(
            decide(decider, "/ws", key) is stage for key, stage in list(stages.items())[:500]
        )
    async with decider_for(toggles_path) as again:
        assert all(decide(again, "/ws", key) is stage for key, stage in list(stages.items())[:500])


async def test_raising_the_percentage_keeps_earlier_keys_live(toggles_path: Path) -> None:
    write_toggles(
        toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.LIVE, percent=25)
    )
    async with decider_for(toggles_path) as decider:
        before = {
            k for k in (f"c{i}" for i in range(2000)) if decide(decider, "/ws", k) is Stage.LIVE
        }
    write_toggles(
        toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.LIVE, percent=50)
    )
    async with decider_for(toggles_path) as decider:
        after = {
            k for k in (f"c{i}" for i in range(2000)) if decide(decider, "/ws", k) is Stage.LIVE
        }
    assert before < after


async def test_user_id_beats_the_connection_key(toggles_path: Path) -> None:
    write_toggles(
        toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.LIVE, percent=50)
    )
    async with decider_for(toggles_path) as decider:
        for user in (f"user-{i}" for i in range(50)):
            seen = {decide(decider, "/ws", f"conn-{n}", userId=user) for n in range(10)}
            assert len(seen) == 1  # every connection of a user lands alike
            assert seen == {decide(decider, "/ws", user)}  # as the shim passes it: key = user id


async def test_kill_switch_and_override(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.LIVE)
    write_toggles(toggles_path, set_kill_switch(doc, True))
    async with decider_for(toggles_path) as decider:
        assert decide(decider, "/ws", "k") is Stage.LEGACY
    async with decider_for(toggles_path, force_stage=Stage.SHADOW) as decider:
        assert decider.decide("/ws", "k", {}) == RoutingDecision(Stage.SHADOW, 1.0)


async def test_kill_switch_can_be_scoped_by_its_own_strategy(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.LIVE)
    doc = set_endpoint_stage(doc, "/ws/training", Stage.LIVE)
    doc = set_kill_switch(doc, True)
    doc["features"][1]["strategies"][0]["constraints"] = [
        {"contextName": "endpoint", "operator": "IN", "values": ["/ws/training"]}
    ]
    write_toggles(toggles_path, doc)
    async with decider_for(toggles_path) as decider:
        assert decide(decider, "/ws", "k") is Stage.LIVE
        assert decide(decider, "/ws/training", "k") is Stage.LEGACY


async def test_disabled_toggle_means_default(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.LIVE)
    doc["features"][0]["enabled"] = False
    write_toggles(toggles_path, doc)
    async with decider_for(toggles_path) as decider:
        assert decide(decider, "/ws", "k") is Stage.LEGACY


async def test_editing_the_file_reroutes_within_a_second(toggles_path: Path) -> None:
    async with decider_for(toggles_path, watch_interval=0.25) as decider:
        changes = Changes()
        decider.add_listener(changes)
        loop = asyncio.get_running_loop()
        started = loop.time()
        write_toggles(toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.SHADOW))
        await changes.wait(timeout=1.5)
        assert loop.time() - started < 1.5 * UNIT
        assert decide(decider, "/ws", "k") is Stage.SHADOW
        # A plain in-place write (an editor's save) counts too; so does going back.
        await save(toggles_path, json.dumps(default_document()))
        await changes.wait(timeout=1.5)
        assert decide(decider, "/ws", "k") is Stage.LEGACY
        assert changes.count == 2


async def test_removed_listener_is_not_called(toggles_path: Path) -> None:
    async with decider_for(toggles_path) as decider:
        changes, other = Changes(), Changes()
        remove = decider.add_listener(changes)
        decider.add_listener(other)
        remove()
        remove()
        write_toggles(toggles_path, set_kill_switch(default_document(), True))
        await other.wait()
        assert changes.count == 0


async def test_malformed_file_keeps_the_previous_toggles(toggles_path: Path) -> None:
    write_toggles(toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.LIVE))
    with capture_flag_logs() as logs:
        async with decider_for(toggles_path) as decider:
            changes = Changes()
            decider.add_listener(changes)
            await save(toggles_path, '{"version": 2, "features": [')
            bad = default_document()
            bad["features"][0]["strategies"][0]["variants"][0]["name"] = "canary"
            await _until(lambda: any(e["event"] == "flags_file_rejected" for e in logs))
            await save(toggles_path, json.dumps(bad))
            await _until(lambda: sum(e["event"] == "flags_file_rejected" for e in logs) == 2)
            await asyncio.sleep(0.3)  # several more polls: no repeats, no reload
            assert decide(decider, "/ws", "k") is Stage.LIVE
            assert changes.count == 0
            write_toggles(toggles_path, default_document())
            await changes.wait()
            assert decide(decider, "/ws", "k") is Stage.LEGACY
    rejected = [e for e in logs if e["event"] == "flags_file_rejected"]
    assert len(rejected) == 2
    assert rejected[0]["log_level"] == "error"
    assert rejected[0]["path"] == str(toggles_path)
    assert rejected[0]["keeping"] == "previous toggles"
    assert "not valid JSON" in rejected[0]["problems"][0]
    assert any("'canary' is not a stage" in p for p in rejected[1]["problems"])


async def test_missing_file_at_start_means_default_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "toggles.json"
    with capture_flag_logs() as logs:
        async with decider_for(path) as decider:
            assert decide(decider, "/ws", "k") is Stage.LEGACY
            changes = Changes()
            decider.add_listener(changes)
            write_toggles(path, set_endpoint_stage(default_document(), "/ws", Stage.NEW))
            await changes.wait()
            assert decide(decider, "/ws", "k") is Stage.NEW
    assert [e["keeping"] for e in logs if e["event"] == "flags_file_rejected"] == ["default stage"]


async def test_decide_before_start_is_the_default() -> None:
    decider: StageDecider = UnleashStageDecider(settings=FlagSettings())  # mypy: the protocol
    assert decider.decide("/ws", "k", {}) == RoutingDecision(Stage.LEGACY, 1.0)


async def test_embedded_mode_makes_no_network_calls_and_logs_no_warnings(
    toggles_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"network access: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    caplog.set_level(logging.DEBUG)
    with capture_flag_logs() as logs:
        async with decider_for(toggles_path) as decider:
            changes = Changes()
            decider.add_listener(changes)
            write_toggles(toggles_path, set_endpoint_stage(default_document(), "/ws", Stage.LIVE))
            await changes.wait()
            for i in range(100):
                decide(decider, "/ws", f"k{i}", userId=f"u{i}")
                decide(decider, "/ws/unknown", f"k{i}")
    assert attempts == []
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert [e["log_level"] for e in logs] == ["info", "info"]  # two loads


async def _until(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout * UNIT):
        while not condition():
            await asyncio.sleep(0.02)


async def test_create_missing_seeds_the_file_from_the_packaged_document(tmp_path: Path) -> None:
    path = tmp_path / "ws-migration-toggles.json"
    with capture_flag_logs() as logs:
        async with decider_for(path, create_missing=True) as decider:
            assert decide(decider, "/ws", "k") is Stage.LEGACY
    assert path.read_bytes() == PACKAGED_TOGGLES_FILE.read_bytes()
    assert [e["event"] for e in logs if e["event"].startswith("flags_file")] == [
        "flags_file_created"
    ]
