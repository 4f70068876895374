"""Unit tests for legacy.producers: phase bookkeeping and what each producer broadcasts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from legacy import producers
from legacy.catalogue import CATALOGUE, entry


class RecordingManager:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def broadcast(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture(autouse=True)
def clean_phase_status() -> Iterator[None]:
    producers.phase_status.clear()
    yield
    producers.phase_status.clear()


@pytest.fixture
def manager() -> RecordingManager:
    return RecordingManager()


async def test_update_training_progress_creates_then_updates_the_phase(
    manager: RecordingManager,
) -> None:
    await producers.update_training_progress(manager, 0.1, "Initializing")
    entry_ = producers.phase_status["Cognate"]
    started = entry_["start_time"]
    assert entry_ | {"start_time": None, "last_update": None} == {
        "phase_name": "Cognate",
        "status": "running",
        "progress": 0.1,
        "message": "Initializing",
        "start_time": None,
        "last_update": None,
        "models_completed": 0,
        "total_models": producers.DEFAULT_TOTAL_MODELS,
    }
    await producers.update_training_progress(manager, 0.6, "Training model 2/3")
    assert producers.phase_status["Cognate"]["progress"] == 0.6
    assert producers.phase_status["Cognate"]["message"] == "Training model 2/3"
    assert producers.phase_status["Cognate"]["start_time"] == started
    assert list(producers.phase_status) == ["Cognate"]


async def test_update_training_progress_broadcasts_training_update(
    manager: RecordingManager,
) -> None:
    await producers.update_training_progress(manager, 0.25, "epoch 2", phase_name="EvoMerge")
    (sent,) = manager.sent
    assert set(sent) == {"type", "phase_name", "progress", "message", "status", "timestamp"}
    assert sent["type"] == "training_update"
    assert (sent["phase_name"], sent["progress"], sent["message"], sent["status"]) == (
        "EvoMerge",
        0.25,
        "epoch 2",
        "running",
    )
    assert sent["timestamp"] == producers.phase_status["EvoMerge"]["last_update"]


async def test_phases_are_tracked_independently_and_complete_at_one(
    manager: RecordingManager,
) -> None:
    await producers.update_training_progress(manager, 0.5, "half", phase_name="Cognate")
    await producers.update_training_progress(manager, 1.0, "done", phase_name="EvoMerge")
    assert producers.phase_status["Cognate"]["status"] == "running"
    assert producers.phase_status["EvoMerge"]["status"] == "completed"
    assert manager.sent[-1]["status"] == "completed"


async def test_a_failed_phase_stays_failed(manager: RecordingManager) -> None:
    await producers.update_training_progress(manager, 0.5, "half")
    await producers.training_failed(manager, "CUDA out of memory", session_id="s1")
    assert producers.phase_status["Cognate"]["status"] == "failed"
    assert producers.phase_status["Cognate"]["message"] == "CUDA out of memory"
    await producers.update_training_progress(manager, 0.6, "late report")
    assert producers.phase_status["Cognate"]["status"] == "failed"
    assert manager.sent[1]["type"] == "training_error"
    assert manager.sent[1]["session_id"] == "s1"


async def test_training_failed_for_an_unknown_phase_creates_it(manager: RecordingManager) -> None:
    await producers.training_failed(manager, "boom", phase_name="Quiet-STaR")
    assert producers.phase_status["Quiet-STaR"]["status"] == "failed"
    assert "session_id" not in manager.sent[0]


async def test_phase_change_and_completion_bookkeeping(manager: RecordingManager) -> None:
    await producers.phase_changed(manager, "Cognate", "EvoMerge")
    assert producers.phase_status["EvoMerge"]["status"] == "running"
    await producers.phase_completed(manager, "EvoMerge", models_completed=2, duration_seconds=9.5)
    done = producers.phase_status["EvoMerge"]
    assert (done["status"], done["progress"], done["models_completed"]) == ("completed", 1.0, 2)
    assert manager.sent[-1]["total_models"] == producers.DEFAULT_TOTAL_MODELS


async def test_model_created_counts_models_of_a_known_phase(manager: RecordingManager) -> None:
    await producers.model_created(manager, "m1", "Model 1", 10)  # phase unknown: no entry made
    assert producers.phase_status == {}
    await producers.update_training_progress(manager, 0.1, "go")
    await producers.model_created(manager, "m2", "Model 2", 10)
    assert producers.phase_status["Cognate"]["models_completed"] == 1


async def test_system_status_lists_running_phases(manager: RecordingManager) -> None:
    await producers.update_training_progress(manager, 0.5, "a", phase_name="Cognate")
    await producers.update_training_progress(manager, 1.0, "b", phase_name="EvoMerge")
    await producers.system_status(manager, "busy", "training")
    assert manager.sent[-1]["active_phases"] == ["Cognate"]


Call = Callable[[RecordingManager], Awaitable[None]]

#: Each producer, called with the values of its catalogue entry.
PRODUCER_CALLS: dict[str, Call] = {
    "training_update": lambda m: producers.update_training_progress(
        m, 0.35, "Training model 2/3: epoch 4"
    ),
    "training_started": lambda m: producers.training_started(
        m,
        "task-7f3c2a",
        {"epochs_per_phase": 6, "learning_rate": 0.0003, "base_models": ["qwen-1.5b"]},
    ),
    "training_complete": lambda m: producers.training_completed(
        m, "task-7f3c2a", final_metrics={"loss": 0.4182, "accuracy": 0.913}
    ),
    "training_error": lambda m: producers.training_failed(
        m, "CUDA out of memory", phase_name="EvoMerge", session_id="task-7f3c2a"
    ),
    "phase_change": lambda m: producers.phase_changed(m, "Cognate", "EvoMerge"),
    "phase_complete": lambda m: producers.phase_completed(
        m, "Cognate", models_completed=3, duration_seconds=412.5
    ),
    "model_created": lambda m: producers.model_created(
        m, "cognate-model-1", "Cognate Foundation 1", 25_083_528
    ),
    "model_updated": lambda m: producers.model_updated(
        m, "cognate-model-1", {"status": "evaluated", "score": 0.87}
    ),
    "status": lambda m: producers.system_status(m, "ready", "Agent Forge backend ready"),
    "nested_update": lambda m: producers.progress_update(
        m, "EvoMerge", 0.42, "merging generation 21/50"
    ),
    "bare_progress": lambda m: producers.progress_tick(m, 0.3, "task-7f3c2a"),
}


def test_every_catalogued_shape_has_a_producer_call() -> None:
    assert set(PRODUCER_CALLS) == {e.name for e in CATALOGUE}


@pytest.mark.parametrize("name", sorted(PRODUCER_CALLS))
async def test_producer_broadcasts_its_catalogued_shape(
    name: str, manager: RecordingManager
) -> None:
    if name == "status":
        await producers.update_training_progress(RecordingManager(), 0.2, "x")
    await PRODUCER_CALLS[name](manager)
    (sent,) = manager.sent
    expected = entry(name).fresh()
    if "timestamp" in expected:
        assert isinstance(sent.pop("timestamp"), str)
        del expected["timestamp"]
    assert sent == expected


def test_builders_are_pure_given_a_timestamp() -> None:
    first = producers.training_update_payload("A", 0.5, "m", "running", timestamp="t")
    second = producers.training_update_payload("A", 0.5, "m", "running", timestamp="t")
    assert first == second
    assert first is not second
    assert producers.phase_status == {}
