"""Another team's backend (``jobqueue``) migrated by the one-line manager swap.

A real uvicorn server on 127.0.0.1 and real ``websockets`` clients. First the
app runs with its own ``JobSocketManager`` and we record what old clients get;
then the same app runs with ``CompatWebSocketManager(legacy=JobSocketManager(),
...)`` and the endpoint walks legacy -> shadow -> live -> new -> legacy with the
same clients connected, each stage replaying the same producer sequence.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from service import WebSocketService
from shim import (
    CompatWebSocketManager,
    DiffConfig,
    Differ,
    FixedStages,
    MismatchKind,
    Stage,
    TranslationRule,
    Translator,
)
from tests.support import UNIT, connect, running_server

from .jobqueue.app import JobSocketManager, create_app
from .jobqueue.rules import DONE, PROGRESS, job_rules, lossy_rules

pytestmark = pytest.mark.integration

ENDPOINT = "/jobs/ws"
ENVELOPE = [Subprotocol("envelope.v1")]
ROOT = Path(__file__).resolve().parents[2]

SESSION_PROGRESS = {**PROGRESS, "pct": 0.5}
#: The producer sequence, as (route, JSON body); the same at every stage.
SEQUENCE: list[tuple[str, Any]] = [
    ("/emit/broadcast", ["tick", 3]),
    ("/emit/broadcast", PROGRESS),
    ("/emit/session/S1", SESSION_PROGRESS),
    ("/emit/user/u1", {"text": "job j1 finished"}),
    ("/emit/user/env", {"text": "job j2 finished"}),
    ("/emit/broadcast", DONE),
]
#: Old clients: name -> query string. A and B share session S1, C is alone in S2.
OLD = {"A": "session=S1&user=u1", "B": "session=S1&user=u2", "C": "session=S2&user=u3"}
#: How many frames each client gets per sequence (E: the envelope client, in S1).
COUNTS = {"A": 5, "B": 4, "C": 3, "E": 5}
ENVELOPE_TYPES = ["custom", "job_progress", "job_progress", "custom", "job_done"]


@dataclass
class Run:
    http: httpx.AsyncClient
    sockets: dict[str, ClientConnection] = field(default_factory=dict)


@asynccontextmanager
async def serve(manager: Any, *, envelope: bool) -> AsyncIterator[Run]:
    """The app behind uvicorn, the old clients (and the envelope one) connected."""
    async with running_server(create_app(manager)) as url:
        base = url.replace("ws://", "http://")
        async with httpx.AsyncClient(base_url=base, timeout=5 * UNIT) as http:
            run = Run(http)
            try:
                for name, query in OLD.items():
                    run.sockets[name] = await connect(f"{url}{ENDPOINT}?{query}")
                if envelope:
                    env = await connect(
                        f"{url}{ENDPOINT}?session=S1&user=env", subprotocols=ENVELOPE
                    )
                    run.sockets["E"] = env
                    hello = json.loads(await asyncio.wait_for(env.recv(), 3 * UNIT))
                    assert hello["type"] == "connection_established"
                await wait_for_connections(manager, len(run.sockets))
                yield run
            finally:
                for ws in run.sockets.values():
                    await ws.close()


async def wait_for_connections(manager: Any, count: int) -> None:
    """The endpoint's ``connect`` has run for every client (users map filled)."""
    async with asyncio.timeout(3 * UNIT):
        while len(manager.users) < count:
            await asyncio.sleep(0.01)


async def emit_sequence(run: Run) -> None:
    for route, body in SEQUENCE:
        response = await run.http.post(route, json=body)
        assert response.status_code == 200, response.text


async def frames(ws: ClientConnection, count: int) -> list[str]:
    """Exactly ``count`` text frames, then nothing else for a short while."""
    got = []
    for _ in range(count):
        raw = await asyncio.wait_for(ws.recv(), 3 * UNIT)
        assert isinstance(raw, str)
        got.append(raw)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.2 * UNIT)
    return got


async def collect(run: Run) -> dict[str, list[str]]:
    await emit_sequence(run)
    names = list(run.sockets)
    received = await asyncio.gather(*(frames(run.sockets[n], COUNTS[n]) for n in names))
    return dict(zip(names, received, strict=True))


def canonical(text: str) -> str:
    """A frame as JSON with sorted keys (types kept: ``0`` and ``0.0`` differ); text as is."""
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except json.JSONDecodeError:
        return text


def shim_manager(
    stages: FixedStages, rules: list[TranslationRule] | None = None
) -> CompatWebSocketManager:
    # The one-line swap, as the job-queue team would write it.
    return CompatWebSocketManager(
        legacy=JobSocketManager(),
        rules=rules if rules is not None else job_rules(),
        decider=stages,
        service=WebSocketService(heartbeat_interval=None),
        differ=Differ(DiffConfig(settle_seconds=0.2)),
        endpoint_topics={ENDPOINT: ["jobs", "custom"]},
    )


async def flip(manager: CompatWebSocketManager, stages: FixedStages, stage: Stage) -> None:
    """Set the endpoint's stage; the shim re-routes live connections (a task)."""
    stages.set(ENDPOINT, stage)
    async with asyncio.timeout(3 * UNIT):
        while manager.stats()["endpoints"][ENDPOINT]["stages"] != {stage.value: 4}:
            await asyncio.sleep(0.01)


async def baseline() -> dict[str, list[str]]:
    async with serve(JobSocketManager(), envelope=False) as run:
        return await collect(run)


WALK = [Stage.LEGACY, Stage.SHADOW, Stage.LIVE, Stage.NEW, Stage.LEGACY]


async def walk() -> list[tuple[Stage, dict[str, list[str]]]]:
    """Every stage of :data:`WALK` with the same connected clients; frames per stage."""
    stages = FixedStages(stages={ENDPOINT: Stage.LEGACY})
    manager = shim_manager(stages)
    seen: list[tuple[Stage, dict[str, list[str]]]] = []
    try:
        async with serve(manager, envelope=True) as run:
            for stage in WALK:
                await flip(manager, stages, stage)
                seen.append((stage, await collect(run)))
    finally:
        await manager.stop()
        manager.close()
    return seen


# -- the tests ----------------------------------------------------------------------------


async def test_baseline_app_without_the_shim() -> None:
    got = await baseline()
    tick, progress, session, done = (
        '["tick",3]',
        json.dumps(PROGRESS, separators=(",", ":")),
        json.dumps(SESSION_PROGRESS, separators=(",", ":")),
        json.dumps(DONE, separators=(",", ":")),
    )
    assert got["A"] == [tick, progress, session, "job j1 finished", done]
    assert got["B"] == [tick, progress, session, done]
    assert got["C"] == [tick, progress, done]


async def test_walk_every_stage_with_the_shim() -> None:
    expected = await baseline()
    stages = FixedStages(stages={ENDPOINT: Stage.LEGACY})
    manager = shim_manager(stages)
    try:
        async with serve(manager, envelope=True) as run:
            for stage in WALK:
                await flip(manager, stages, stage)
                before = manager.stats()["delivered"]
                got = await collect(run)

                # Old clients: the baseline's frames, same order, nothing lost or
                # doubled (JSON compared type-exactly; bytes: the test below).
                for name in OLD:
                    assert [canonical(t) for t in got[name]] == [
                        canonical(t) for t in expected[name]
                    ], (stage, name)
                # broadcast_to_session("S1") reached A, B and E, never C.
                assert json.loads(got["A"][2]) == json.loads(got["B"][2]) == SESSION_PROGRESS
                assert all(json.loads(t) != SESSION_PROGRESS for t in got["C"])

                envelopes = [json.loads(t) for t in got["E"]]
                assert [e["type"] for e in envelopes] == ENVELOPE_TYPES, stage
                assert envelopes[0]["data"] == {"value": ["tick", 3]}
                assert envelopes[1]["data"]["job_id"] == "j1"
                assert envelopes[1]["data"]["pct"] == 0.25
                assert envelopes[1]["timestamp"] == "2026-12-04T10:00:00Z"
                assert envelopes[2]["data"]["pct"] == 0.5
                assert envelopes[3]["data"] == {"text": "job j2 finished"}
                assert envelopes[4]["data"]["ok"] is True
                assert {e["topic"] for e in envelopes} == {"custom", "jobs"}

                # The app manager's own state, through the shim, holds the real sockets.
                real = manager.active_connections
                assert len(real) == 4 and all(isinstance(s, WebSocket) for s in real)
                assert sorted(manager.sessions) == ["S1", "S2"]
                assert len(manager.sessions["S1"]) == 3 and len(manager.sessions["S2"]) == 1
                assert sorted(manager.users) == ["env", "u1", "u2", "u3"]
                for socket in manager.users.values():
                    assert any(socket is r for r in real)
                assert manager.users["u1"] in manager.sessions["S1"]
                assert manager.users["u3"] not in manager.sessions["S1"]

                stats = manager.stats()
                feeding = "new" if stage.new_delivers else "legacy"
                idle = "legacy" if feeding == "new" else "new"
                assert stats["connections"] == 4
                assert stats["endpoints"][ENDPOINT] == {
                    "stages": {stage.value: 4},
                    "formats": {"legacy": 3, "envelope": 1},
                    "delivered_by": {feeding: 4},
                }
                after = stats["delivered"]
                assert after[feeding]["sent"] - before[feeding]["sent"] == sum(COUNTS.values())
                assert after[idle]["sent"] == before[idle]["sent"]
                assert after[feeding]["failed"] == 0

                if stage.compares:
                    manager.differ.flush(force=True)
                    counts = manager.differ.counters()[ENDPOINT]
                    assert counts["matched"] > 0, stage
                    assert manager.differ.unexpected_total == 0, manager.differ.recent()
            rules = manager.stats()["translation"]["rules"]
            assert rules["job_progress"] > 0 and rules["job_done"] > 0
    finally:
        await manager.stop()
        manager.close()


async def test_old_clients_get_baseline_bytes_at_every_stage() -> None:
    expected = await baseline()
    seen = await walk()
    for stage, got in seen:
        for name in OLD:
            assert got[name] == expected[name], (stage, name)


def test_nested_timestamp_with_siblings_round_trips() -> None:
    payload = {**DONE, "timing": {**DONE["timing"], "started_at": "2026-12-04T09:00:00Z"}}
    rules = [r for r in job_rules() if r.name == "job_progress"]
    rules.append(
        TranslationRule(
            "job_done",
            "job_done",
            "jobs",
            discriminator=("event", "job_done"),
            fields=(("job.id", "job_id"),),
            timestamp_field="timing.updated_at",
        )
    )
    translator = Translator(rules=rules)
    assert translator.round_trip_problem(payload) is None


async def test_lossy_rule_is_a_field_mismatch_at_live() -> None:
    stages = FixedStages(stages={ENDPOINT: Stage.LIVE})
    manager = shim_manager(stages, lossy_rules())
    try:
        async with serve(manager, envelope=True) as run:
            got = await collect(run)
            # What the old client actually receives: the fraction is gone.
            assert json.loads(got["A"][1])["pct"] == 0.0
            manager.differ.flush(force=True)
            mismatches = [
                m
                for m in manager.differ.recent()
                if m.kind is MismatchKind.FIELD and any(f.path == "data.pct" for f in m.fields)
            ]
            assert mismatches, manager.differ.recent()
            old_ids = {r.connection_id for r in manager.routes() if r.format.value == "legacy"}
            hit = [m for m in mismatches if m.connection in old_ids]
            assert hit
            diff = next(f for f in hit[0].fields if f.path == "data.pct")
            assert (diff.legacy, diff.new) == (0.25, 0.0)
            assert manager.differ.unexpected_total >= 1
    finally:
        await manager.stop()
        manager.close()


@pytest.mark.parametrize(("rules", "status"), [("lossy_rules", 1), ("job_rules", 0)])
def test_compare_cli_with_the_apps_rules(rules: str, status: int) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shim.cli",
            "compare",
            "--quiet",
            "--rules",
            f"tests.foreign.jobqueue.rules:{rules}",
            str(Path(__file__).with_name("lossy_scenario.json")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, result.stdout + result.stderr
