"""Rollout and rollback through the embedded toggles file, with clients connected.

The operator edits the file (``scripts/flags.py`` as a subprocess, or
``flags.set_endpoint_stage`` + ``write_document``); the backend's decider polls it
every 0.1 s here and the shim re-routes every live connection in place: the
client keeps its socket (same server-side connection id, never closed) and the
next events come from the other side in the same wire format.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from flags import read_document, set_endpoint_stage, write_document
from shim.stages import Stage
from tests.flags.helpers import capture_flag_logs, save
from tests.reference.support import (
    ENDPOINTS,
    Backend,
    Client,
    all_receive,
    eventually,
    flags_cli,
    training_finished,
)

pytestmark = pytest.mark.integration

#: Flip -> re-routed, after the file is written: 0.1 s watch + client rebuild + gate.
FOLLOW = 2.0


async def traffic_reaches(backend: Backend, clients: list[Client]) -> str:
    """Run a short session; every client gets its end over its original socket."""
    marks = [len(c.frames) for c in clients]
    session_id = await backend.train(1)
    await all_receive(clients, session_id, marks)
    assert all(c.is_open for c in clients)
    return session_id


def delivered_by_new_side(client: Client, session_id: str) -> bool:
    """A new-format client's envelopes carry ``seq`` only when the service delivers."""
    (done,) = [f for f in client.frames if training_finished(session_id)(f)]
    return "seq" in done


async def test_cli_rollout_rollback_and_kill_switch_reroute_in_place(
    backend: Backend, toggles: Path
) -> None:
    clients = await backend.clients_everywhere()
    everyone = list(clients.values())
    ids = backend.connection_ids()
    assert len(ids) == 4 and backend.stages() == {Stage.LEGACY}
    state = await backend.migration()
    assert state["endpoints"]["/ws/training"]["clients"] == {"legacy": 2, "new": 0}
    session = await traffic_reaches(backend, everyone)
    assert not delivered_by_new_side(clients["new", "/ws/training"], session)

    # Rollout: one command, one endpoint.
    await flags_cli(toggles, "set", "/ws/training", "live")
    took = await backend.rerouted({"/ws/training": Stage.LIVE, "/ws": Stage.LEGACY}, FOLLOW)
    state = await backend.migration()
    assert state["endpoints"]["/ws/training"]["stage"] == "live"
    assert state["endpoints"]["/ws/training"]["clients"] == {"legacy": 0, "new": 2}
    assert state["endpoints"]["/ws"]["clients"] == {"legacy": 2, "new": 0}
    assert backend.connection_ids() == ids, "a client reconnected"
    session = await traffic_reaches(backend, everyone)
    assert delivered_by_new_side(clients["new", "/ws/training"], session)
    assert not delivered_by_new_side(clients["new", "/ws"], session)
    print(f"\nCLI set /ws/training live: re-routed {took:.3f} s after the command exited")

    # Rollback: the same command.
    await flags_cli(toggles, "set", "/ws/training", "legacy")
    await backend.rerouted({"/ws/training": Stage.LEGACY}, FOLLOW)
    state = await backend.migration()
    assert state["endpoints"]["/ws/training"]["clients"] == {"legacy": 2, "new": 0}
    session = await traffic_reaches(backend, everyone)
    assert not delivered_by_new_side(clients["new", "/ws/training"], session)

    # Everything new, then the kill switch: everything legacy at once, and back.
    doc = read_document(toggles)
    for endpoint in ENDPOINTS:
        doc = set_endpoint_stage(doc, endpoint, Stage.NEW)
    write_document(toggles, doc)
    await backend.rerouted(dict.fromkeys(ENDPOINTS, Stage.NEW), FOLLOW)
    assert (await backend.migration())["endpoints"]["/ws"]["clients"] == {"legacy": 0, "new": 2}

    await flags_cli(toggles, "kill", "on")
    await backend.rerouted(dict.fromkeys(ENDPOINTS, Stage.LEGACY), FOLLOW)
    state = await backend.migration()
    for endpoint in ENDPOINTS:
        assert state["endpoints"][endpoint]["stage"] == "legacy"
        assert state["endpoints"][endpoint]["clients"] == {"legacy": 2, "new": 0}
    session = await traffic_reaches(backend, everyone)
    assert not delivered_by_new_side(clients["new", "/ws"], session)

    await flags_cli(toggles, "kill", "off")
    await backend.rerouted(dict.fromkeys(ENDPOINTS, Stage.NEW), FOLLOW)
    await traffic_reaches(backend, everyone)
    assert backend.connection_ids() == ids, "a client reconnected"
    for client in everyone:
        # One handshake per socket: never re-established, never told to reconnect.
        assert len(client.connection_ids) == (1 if client.fmt == "new" else 0), client
        assert set(client.connection_ids) <= ids
    assert backend.manager.stats()["counters"]["rerouted_connections"] == 2 + 2 + 4 + 4 + 4


@pytest.mark.timeout(60)
async def test_time_from_file_write_to_200_connections_rerouted(
    backend: Backend, toggles: Path
) -> None:
    """~200 live connections (old and new, both endpoints); prints flip -> re-routed."""
    per_kind = 50
    clients = await asyncio.gather(
        *(
            backend.client(endpoint, fmt)
            for endpoint in ENDPOINTS
            for fmt in ("old", "new")
            for _ in range(per_kind)
        )
    )
    assert backend.manager.stats()["connections"] == len(clients) == 200
    ids = backend.connection_ids()

    for stage in (Stage.LIVE, Stage.LEGACY):
        doc = read_document(toggles)
        for endpoint in ENDPOINTS:
            doc = set_endpoint_stage(doc, endpoint, stage)
        written = time.time()
        write_document(toggles, doc)
        took = await backend.rerouted(dict.fromkeys(ENDPOINTS, stage), timeout=5)
        last = backend.manager.last_reroute
        assert last["changed"] == 200 and last["connections"] == 200
        print(
            f"\n{stage.value}: 200 connections re-routed {took:.3f} s after the write "
            f"(reroute at +{last['at'] - written:.3f} s; the reroute pass itself "
            f"{last['seconds'] * 1000:.2f} ms)"
        )
        await traffic_reaches(backend, list(clients))
    assert backend.connection_ids() == ids


async def test_malformed_toggles_file_keeps_routing(backend: Backend, toggles: Path) -> None:
    clients = list((await backend.clients_everywhere()).values())
    await flags_cli(toggles, "set", "/ws", "live")
    await backend.rerouted({"/ws": Stage.LIVE, "/ws/training": Stage.LEGACY}, FOLLOW)
    good = toggles.read_text()
    flips = backend.manager.stats()["counters"]["flag_changes"]

    broken = [
        good[: len(good) // 2],  # an editor saved half a file
        good.replace('"name": "legacy"', '"name": "purple"'),  # not a stage
        "",
    ]
    with capture_flag_logs() as logs:
        for text in broken:
            await save(toggles, text)
            await asyncio.sleep(0.35)  # three watch intervals
            assert backend.stages("/ws") == {Stage.LIVE}
            assert backend.stages("/ws/training") == {Stage.LEGACY}
            await traffic_reaches(backend, clients)
    rejected = [e for e in logs if e["event"] == "flags_file_rejected"]
    assert len(rejected) == len(broken), logs
    assert all(e["keeping"] == "previous toggles" for e in rejected)
    assert backend.manager.stats()["counters"]["flag_changes"] == flips
    state = await backend.migration()
    assert state["endpoints"]["/ws"]["clients"] == {"legacy": 0, "new": 2}

    # The watch survived: a good file is picked up again.
    await save(toggles, good)
    await flags_cli(toggles, "set", "/ws", "legacy")
    await backend.rerouted({"/ws": Stage.LEGACY}, FOLLOW)
    await traffic_reaches(backend, clients)
    await eventually(lambda: all(c.is_open for c in clients))
