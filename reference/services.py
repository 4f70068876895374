"""New-style producers from the migration guide's step 4: they publish WebSocketMessages.

``TrainingService`` runs simulated training sessions: it announces each session
the new way (``training_started``), reports per-epoch progress the new way
(``training_progress`` with loss, metrics and ETA), and also keeps the old phase
bookkeeping through the legacy producer ``update_training_progress`` that calls
``manager.broadcast(dict)`` — both kinds of producer side by side, as in a real
migration. ``ModelService`` creates models the new way (``model_created``).

Both keep bounded state, so a client posting in a loop cannot grow the process:
``TrainingService`` keeps at most ``max_sessions`` sessions (the oldest finished
ones go first; running ones never) and runs at most ``max_running`` at once;
``ModelService`` keeps the ``max_models`` newest models. What one entry can hold
is bounded by the REST body limit (``reference.limits``).
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from legacy import producers
from service import MessageType, WebSocketMessage, WebSocketService
from service.errors import BrokerUnavailable

__all__ = ["ModelService", "TrainingService", "TrainingSession"]

_log = structlog.get_logger("reference")

PHASES = ("Cognate", "EvoMerge", "Quiet-STaR")


@dataclass
class TrainingSession:
    session_id: str
    parameters: dict[str, Any]
    epochs_per_phase: int
    status: str = "running"
    phase: str = PHASES[0]
    epoch: int = 0
    progress: float = 0.0
    loss: float | None = None
    history: list[float] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "status": self.status,
            "phase": self.phase,
            "current_epoch": self.epoch,
            "progress": round(self.progress, 4),
            "loss": self.loss,
            "parameters": self.parameters,
        }


class TrainingService:
    """Simulated training with realistic pacing; a handful of sessions at a time.

    :attr:`sessions` holds, in start order, every running session and the newest
    finished (completed, cancelled or failed) ones, at most ``max_sessions`` in
    all. ``max_running <= max_sessions``, so a new session always finds room.
    """

    def __init__(
        self,
        service: WebSocketService,
        manager: Any,
        *,
        epoch_seconds: float = 0.5,
        max_running: int = 5,
        max_sessions: int = 100,
        seed: int | None = None,
    ) -> None:
        if not 1 <= max_running <= max_sessions:
            raise ValueError(
                f"need 1 <= max_running <= max_sessions, got {max_running} and {max_sessions}"
            )
        self.service = service
        self.manager = manager
        self.epoch_seconds = epoch_seconds
        self.max_running = max_running
        self.max_sessions = max_sessions
        self.sessions: dict[str, TrainingSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(seed)

    @property
    def running(self) -> int:
        return sum(1 for s in self.sessions.values() if s.status == "running")

    def active_phases(self) -> list[str]:
        return sorted({s.phase for s in self.sessions.values() if s.status == "running"})

    async def start_training(self, parameters: dict[str, Any]) -> str:
        """Start a session and return its id; raises RuntimeError when too many run."""
        if self.running >= self.max_running:
            raise RuntimeError(f"at most {self.max_running} sessions may run at once")
        session_id = str(uuid.uuid4())
        epochs = int(parameters.get("epochs_per_phase", 6))
        session = TrainingSession(session_id, dict(parameters), max(1, min(epochs, 100)))
        self.sessions[session_id] = session
        await self._evict()
        message = WebSocketMessage(
            type=MessageType.TRAINING_STARTED,
            data={"session_id": session_id, "parameters": session.parameters},
        )
        await self.service.broadcast(message, topic="training")
        task = asyncio.get_running_loop().create_task(self._run(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return session_id

    async def _evict(self) -> None:
        """Drop the oldest finished sessions until at most ``max_sessions`` are kept,
        with the last progress message the service retains for each of them."""
        excess = len(self.sessions) - self.max_sessions
        if excess <= 0:
            return
        finished = [key for key, s in self.sessions.items() if s.status != "running"]
        for key in finished[:excess]:
            del self.sessions[key]
            if "training" in self.service.retain:
                try:
                    await self.service.forget_retained("training", key)
                except BrokerUnavailable:  # the broker is down: that one value stays
                    _log.warning("retained_session_kept", session_id=key)

    async def _run(self, session: TrainingSession) -> None:
        total = len(PHASES) * session.epochs_per_phase
        loss = 2.5 + self._random.random()
        step = 0
        try:
            for phase in PHASES:
                session.phase = phase
                for epoch in range(1, session.epochs_per_phase + 1):
                    await asyncio.sleep(self.epoch_seconds)
                    step += 1
                    loss *= 0.9 + 0.05 * self._random.random()
                    session.epoch, session.loss = epoch, round(loss, 5)
                    session.progress = step / total
                    session.history.append(session.loss)
                    await self._report(session, total - step)
            session.status = "completed"
            await producers.training_completed(self.manager, session.session_id)
        except asyncio.CancelledError:
            session.status = "cancelled"
            raise
        finally:
            # An exception escaped: a session left "running" would hold a run slot
            # and never be evicted.
            if session.status == "running":
                session.status = "failed"

    async def _report(self, session: TrainingSession, remaining_steps: int) -> None:
        message = WebSocketMessage(
            type=MessageType.TRAINING_PROGRESS,
            data={
                "session_id": session.session_id,
                "progress": round(session.progress, 4),
                "current_epoch": session.epoch,
                "loss": session.loss,
                "metrics": {"accuracy": round(1 - math.exp(-3 * session.progress), 4)},
                "estimated_time_remaining": round(remaining_steps * self.epoch_seconds, 2),
                "phase_name": session.phase,
            },
        )
        await self.service.broadcast(message, topic="training")
        # The old producer, unchanged: phase bookkeeping through manager.broadcast(dict).
        await producers.update_training_progress(
            self.manager,
            session.progress,
            f"{session.phase}: epoch {session.epoch}/{session.epochs_per_phase}",
            phase_name=session.phase,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


class ModelService:
    """Creates models and announces them the new way; keeps the ``max_models`` newest."""

    def __init__(self, service: WebSocketService, *, max_models: int = 1000) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, not {max_models}")
        self.service = service
        self.max_models = max_models
        self.models: dict[str, dict[str, Any]] = {}

    async def create_model(self, model_info: dict[str, Any]) -> str:
        model_id = str(uuid.uuid4())
        self.models[model_id] = {"model_id": model_id, **model_info}
        while len(self.models) > self.max_models:
            del self.models[next(iter(self.models))]  # dicts keep creation order
        info = {"name": model_info.get("name"), "parameter_count": model_info.get("parameters")}
        message = WebSocketMessage(
            type=MessageType.MODEL_CREATED, data={"model_id": model_id, "model_info": info}
        )
        await self.service.broadcast(message, topic="models")
        return model_id
