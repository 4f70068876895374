"""REST producers -> old and new clients on /ws and /ws/training, at every stage.

What each stage delivers, as these tests pin it down (``old`` = plain client,
legacy payloads; ``new`` = ``envelope.v1`` client, standardized envelopes):

========  ==========================  ===========================================
stage     who writes to the socket    what a client gets
========  ==========================  ===========================================
legacy    the legacy manager          every event on both endpoints (the legacy
                                      manager has no topics); new clients get
                                      envelopes rendered from legacy payloads,
                                      without ``seq``/``epoch``
shadow    the legacy manager          as legacy (the service only records)
live      the new service             /ws: training + models; /ws/training:
                                      training only (topic filter), in both
                                      formats; envelopes carry ``seq`` per topic
new       the new service             as live (legacy only drops out of the diff)
========  ==========================  ===========================================

So model events reach /ws/training clients, old and new, only while the legacy
manager delivers; that is an expected difference the differ is told about
(``reference.app.expected_differences``).

Every epoch produces two progress events: the new producer's
``training_progress`` (with ``session_id``, loss, metrics, ETA) and the old
producer's ``training_update`` (phase bookkeeping, no ``session_id``); old
clients get both as ``training_update``, new clients both as
``training_progress``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flags import read_document, set_endpoint_stage, write_document
from shim.stages import Stage
from tests.reference.support import ENDPOINTS, Backend, Client, training_finished

pytestmark = pytest.mark.integration

EPOCHS_PER_PHASE = 2
STEPS = 3 * EPOCHS_PER_PHASE  # three phases


def route_everything(toggles: Path, stage: Stage) -> None:
    doc = read_document(toggles)
    for endpoint in ENDPOINTS:
        doc = set_endpoint_stage(doc, endpoint, stage)
    write_document(toggles, doc)


def fields(frame: dict[str, Any]) -> dict[str, Any]:
    """An event's fields: an envelope's ``data``, a legacy payload itself."""
    data = frame.get("data")
    return data if isinstance(data, dict) else frame


def session_progress(client: Client, session_id: str) -> list[float]:
    progress_type = "training_progress" if client.fmt == "new" else "training_update"
    return [
        fields(f)["progress"]
        for f in client.frames
        if f.get("type") == progress_type and fields(f).get("session_id") == session_id
    ]


def model_events(client: Client, model_id: str) -> list[dict[str, Any]]:
    return [
        f
        for f in client.frames
        if f.get("type") == "model_created" and fields(f).get("model_id") == model_id
    ]


@pytest.fixture(params=list(Stage), ids=[s.value for s in Stage])
def stage(request: pytest.FixtureRequest, toggles: Path) -> Stage:
    """Route both endpoints to the parametrized stage before the backend starts."""
    chosen: Stage = request.param
    route_everything(toggles, chosen)
    return chosen


async def test_training_and_models_reach_each_client_in_its_format(
    stage: Stage, backend: Backend
) -> None:
    clients = await backend.clients_everywhere()
    assert backend.stages() == {stage}

    model_id = await backend.create_model("resnet-test")
    session_id = await backend.train(EPOCHS_PER_PHASE)
    for client in clients.values():
        await client.wait_for(training_finished(session_id), timeout=5)

    for (fmt, endpoint), client in clients.items():
        progress = session_progress(client, session_id)
        # One report per epoch, in order, ending at 1.0.
        assert len(progress) == STEPS, (client, progress)
        assert progress == sorted(progress) and progress[-1] == 1.0, (client, progress)
        started = "training_started"
        assert any(f.get("type") == started for f in client.frames), client
        if fmt == "old":
            assert all("seq" not in f for f in client.frames), client
            assert not any(f.get("type") == "training_progress" for f in client.frames)
        else:
            assert not any(f.get("type") == "training_update" for f in client.frames)
            check_sequence(client, stage)

        models = model_events(client, model_id)
        if endpoint == "/ws" or not stage.new_delivers:
            assert len(models) == 1, (stage, client)
            if fmt == "new":
                assert models[0]["topic"] == "models"
                assert models[0]["data"]["model_info"]["name"] == "resnet-test"
            else:
                assert models[0]["model_name"] == "resnet-test"
        else:
            # /ws/training subscribes to "training" only on the new side.
            assert models == [], (stage, client)

    answer = await backend.http.get("/api/training")
    (session,) = [s for s in answer.json()["sessions"] if s["session_id"] == session_id]
    assert session["status"] == "completed" and session["progress"] == 1.0


def check_sequence(client: Client, stage: Stage) -> None:
    """New side: ``seq`` per topic counts 1, 2, 3... in one epoch; legacy side: none."""
    topical = [f for f in client.frames if "topic" in f]
    assert topical, client
    if not stage.new_delivers:
        assert all("seq" not in f for f in topical), client
        return
    by_topic: dict[str, list[int]] = {}
    epochs: dict[str, set[str]] = {}
    for frame in topical:
        by_topic.setdefault(frame["topic"], []).append(frame["seq"])
        epochs.setdefault(frame["topic"], set()).add(frame["epoch"])
    for topic, seqs in by_topic.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (client, topic, seqs)
        assert len(epochs[topic]) == 1, (client, topic)
    assert set(by_topic) == ({"training", "models"} if client.endpoint == "/ws" else {"training"})


async def test_training_only_client_gets_progress_as_training_progress(
    backend: Backend, toggles: Path
) -> None:
    """A new client on /ws/training, live: only ``training`` frames, numbered from 1."""
    route_everything(toggles, Stage.LIVE)
    await backend.decides({"/ws/training": Stage.LIVE})
    client = await backend.client("/ws/training", "new")
    await backend.create_model("ignored")
    session_id = await backend.train(1)
    await client.wait_for(training_finished(session_id), timeout=5)
    kinds = [f["type"] for f in client.frames]
    assert kinds[0] == "connection_established"
    assert kinds[1] == "training_started" and kinds[-1] == "training_completed"
    assert set(kinds[2:-1]) == {"training_progress"} and len(kinds[2:-1]) == 2 * 3
    assert [f["seq"] for f in client.frames[1:]] == list(range(1, len(kinds)))
