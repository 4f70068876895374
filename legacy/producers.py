"""The legacy producers and their ad-hoc payloads, as an "agent forge" ML backend has them.

Every producer is two functions: a pure builder that returns the payload dict
(``*_payload``; pass ``timestamp`` to make it deterministic) and an ``async``
producer that broadcasts it through the manager, exactly the way the old backend
called ``manager.broadcast({...})``. Phase bookkeeping lives in the module-level
:data:`phase_status` table, as it did in the backend.

The shapes are deliberately inconsistent, the "varying structures" the migration
guide complains about. Shape names (also the names in :mod:`legacy.catalogue` and
of the shim's translation rules)::

    training_update   {"type": "training_update", "phase_name", "progress", "message",
                       "status", "timestamp"}
    training_started  {"type": "training_started", "task_id", "phase_name", "config",
                       "message", "timestamp"}
    training_complete {"type": "training_complete", "session_id", "status": "completed",
                       "message", "final_metrics", "timestamp"}
    training_error    {"type": "training_error", "phase_name", "error",
                       "status": "failed", "session_id"?, "timestamp"}
    phase_change      {"type": "phase_change", "from_phase", "to_phase", "timestamp"}
    phase_complete    {"type": "phase_complete", "phase_name", "models_completed",
                       "total_models", "duration_seconds", "timestamp"}
    model_created     {"type": "model_created", "model_id", "model_name", "parameters",
                       "phase_name", "timestamp"}
    model_updated     {"event": "model_updated", "model_id", "changes", "timestamp"}
                      ("event" instead of "type")
    status            {"type": "status", "status", "message", "active_phases", "timestamp"}
    nested_update     {"type": "update", "payload": {"phase", "progress", "step"}}
                      (fields nested under "payload", no timestamp)
    bare_progress     {"progress", "session"}  (no type at all)

Units: ``progress`` is a fraction in ``[0, 1]`` everywhere (1.0 means done), never
a percentage; ``parameters`` of ``model_created`` is the parameter count;
``duration_seconds`` is seconds. Timestamps are ``datetime.now().isoformat()``:
local time without a UTC offset, as the old backend wrote them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "DEFAULT_TOTAL_MODELS",
    "Broadcaster",
    "bare_progress_payload",
    "model_created",
    "model_created_payload",
    "model_updated",
    "model_updated_payload",
    "nested_update_payload",
    "phase_change_payload",
    "phase_changed",
    "phase_complete_payload",
    "phase_completed",
    "phase_status",
    "progress_tick",
    "progress_update",
    "record_phase_progress",
    "status_payload",
    "system_status",
    "training_complete_payload",
    "training_completed",
    "training_error_payload",
    "training_failed",
    "training_started",
    "training_started_payload",
    "training_update_payload",
    "update_training_progress",
]

#: Models each agent forge phase produces (the Cognate phase builds three).
DEFAULT_TOTAL_MODELS = 3

#: Per-phase bookkeeping, keyed by phase name, as the old backend kept it. Each
#: entry: ``phase_name``, ``status`` (``running``/``completed``/``failed``),
#: ``progress``, ``message``, ``start_time``, ``last_update``,
#: ``models_completed``, ``total_models``.
phase_status: dict[str, dict[str, Any]] = {}


class Broadcaster(Protocol):
    """Anything with the legacy ``broadcast(dict)``: the manager or the shim."""

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every connected client."""


def _now() -> str:
    return datetime.now().isoformat()


# -- phase bookkeeping ---------------------------------------------------------------


def record_phase_progress(
    table: dict[str, dict[str, Any]],
    phase_name: str,
    progress: float,
    message: str,
    *,
    now: str,
) -> dict[str, Any]:
    """Create or update ``table[phase_name]`` for a progress report; return the entry.

    A new entry starts ``running`` with ``start_time = now``. ``status`` becomes
    ``completed`` once ``progress >= 1.0``; a ``failed`` phase stays failed.
    """
    entry = table.get(phase_name)
    if entry is None:
        entry = table[phase_name] = {
            "phase_name": phase_name,
            "status": "running",
            "progress": 0.0,
            "message": "",
            "start_time": now,
            "models_completed": 0,
            "total_models": DEFAULT_TOTAL_MODELS,
        }
    status = entry["status"]
    if status != "failed":
        status = "completed" if progress >= 1.0 else "running"
    entry.update({"progress": progress, "message": message, "status": status, "last_update": now})
    return entry


# -- training ------------------------------------------------------------------------


def training_update_payload(
    phase_name: str, progress: float, message: str, status: str, *, timestamp: str | None = None
) -> dict[str, Any]:
    """The ``training_update`` payload of :func:`update_training_progress`."""
    return {
        "type": "training_update",
        "phase_name": phase_name,
        "progress": progress,
        "message": message,
        "status": status,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def update_training_progress(
    manager: Broadcaster, progress: float, message: str, phase_name: str = "Cognate"
) -> None:
    """Update :data:`phase_status` for ``phase_name`` and broadcast ``training_update``."""
    now = _now()
    entry = record_phase_progress(phase_status, phase_name, progress, message, now=now)
    await manager.broadcast(
        training_update_payload(phase_name, progress, message, entry["status"], timestamp=now)
    )


def training_started_payload(
    task_id: str,
    config: dict[str, Any],
    *,
    phase_name: str = "Cognate",
    message: str = "Training started",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``training_started`` payload: the session is called ``task_id`` here."""
    return {
        "type": "training_started",
        "task_id": task_id,
        "phase_name": phase_name,
        "config": config,
        "message": message,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def training_started(
    manager: Broadcaster, task_id: str, config: dict[str, Any], *, phase_name: str = "Cognate"
) -> None:
    """Mark ``phase_name`` running in :data:`phase_status`; broadcast ``training_started``."""
    now = _now()
    record_phase_progress(phase_status, phase_name, 0.0, "Training started", now=now)
    await manager.broadcast(
        training_started_payload(task_id, config, phase_name=phase_name, timestamp=now)
    )


def training_complete_payload(
    session_id: str,
    *,
    message: str = "Training completed successfully",
    final_metrics: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``training_complete`` payload (``status`` is always ``"completed"``)."""
    return {
        "type": "training_complete",
        "session_id": session_id,
        "status": "completed",
        "message": message,
        "final_metrics": final_metrics if final_metrics is not None else {},
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def training_completed(
    manager: Broadcaster,
    session_id: str,
    *,
    message: str = "Training completed successfully",
    final_metrics: dict[str, Any] | None = None,
) -> None:
    """Broadcast ``training_complete`` for ``session_id``."""
    await manager.broadcast(
        training_complete_payload(session_id, message=message, final_metrics=final_metrics)
    )


def training_error_payload(
    error: str,
    *,
    phase_name: str = "Cognate",
    session_id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``training_error`` payload; ``session_id`` only when one is known."""
    payload: dict[str, Any] = {
        "type": "training_error",
        "phase_name": phase_name,
        "error": error,
        "status": "failed",
    }
    if session_id is not None:
        payload["session_id"] = session_id
    payload["timestamp"] = timestamp if timestamp is not None else _now()
    return payload


async def training_failed(
    manager: Broadcaster, error: str, *, phase_name: str = "Cognate", session_id: str | None = None
) -> None:
    """Mark ``phase_name`` failed in :data:`phase_status`; broadcast ``training_error``."""
    now = _now()
    entry = phase_status.setdefault(
        phase_name,
        {
            "phase_name": phase_name,
            "progress": 0.0,
            "start_time": now,
            "models_completed": 0,
            "total_models": DEFAULT_TOTAL_MODELS,
        },
    )
    entry.update({"status": "failed", "message": error, "last_update": now})
    await manager.broadcast(
        training_error_payload(error, phase_name=phase_name, session_id=session_id, timestamp=now)
    )


# -- phases --------------------------------------------------------------------------


def phase_change_payload(
    from_phase: str, to_phase: str, *, timestamp: str | None = None
) -> dict[str, Any]:
    """The ``phase_change`` payload: the pipeline moved from one phase to the next."""
    return {
        "type": "phase_change",
        "from_phase": from_phase,
        "to_phase": to_phase,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def phase_changed(manager: Broadcaster, from_phase: str, to_phase: str) -> None:
    """Start ``to_phase`` in :data:`phase_status`; broadcast ``phase_change``."""
    now = _now()
    record_phase_progress(phase_status, to_phase, 0.0, f"Starting {to_phase}", now=now)
    await manager.broadcast(phase_change_payload(from_phase, to_phase, timestamp=now))


def phase_complete_payload(
    phase_name: str,
    *,
    models_completed: int,
    total_models: int,
    duration_seconds: float,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``phase_complete`` payload."""
    return {
        "type": "phase_complete",
        "phase_name": phase_name,
        "models_completed": models_completed,
        "total_models": total_models,
        "duration_seconds": duration_seconds,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def phase_completed(
    manager: Broadcaster,
    phase_name: str,
    *,
    models_completed: int = DEFAULT_TOTAL_MODELS,
    duration_seconds: float = 0.0,
) -> None:
    """Mark ``phase_name`` completed in :data:`phase_status`; broadcast ``phase_complete``."""
    now = _now()
    entry = record_phase_progress(phase_status, phase_name, 1.0, f"{phase_name} complete", now=now)
    entry["models_completed"] = models_completed
    await manager.broadcast(
        phase_complete_payload(
            phase_name,
            models_completed=models_completed,
            total_models=entry["total_models"],
            duration_seconds=duration_seconds,
            timestamp=now,
        )
    )


def nested_update_payload(phase: str, progress: float, step: str) -> dict[str, Any]:
    """The generic ``update`` payload, its fields nested under ``payload``, no timestamp."""
    return {"type": "update", "payload": {"phase": phase, "progress": progress, "step": step}}


async def progress_update(manager: Broadcaster, phase: str, progress: float, step: str) -> None:
    """Broadcast the nested ``update`` payload (an older step-level progress report)."""
    await manager.broadcast(nested_update_payload(phase, progress, step))


def bare_progress_payload(progress: float, session: str) -> dict[str, Any]:
    """The typeless progress tick: ``{"progress", "session"}`` and nothing else."""
    return {"progress": progress, "session": session}


async def progress_tick(manager: Broadcaster, progress: float, session: str) -> None:
    """Broadcast a typeless progress tick (clients guess its meaning from ``progress``)."""
    await manager.broadcast(bare_progress_payload(progress, session))


# -- models and system ---------------------------------------------------------------


def model_created_payload(
    model_id: str,
    model_name: str,
    parameters: int,
    *,
    phase_name: str = "Cognate",
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``model_created`` payload; ``parameters`` is the parameter count."""
    return {
        "type": "model_created",
        "model_id": model_id,
        "model_name": model_name,
        "parameters": parameters,
        "phase_name": phase_name,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def model_created(
    manager: Broadcaster,
    model_id: str,
    model_name: str,
    parameters: int,
    *,
    phase_name: str = "Cognate",
) -> None:
    """Count the model in :data:`phase_status` (if the phase is known); broadcast it."""
    entry = phase_status.get(phase_name)
    if entry is not None:
        entry["models_completed"] = entry.get("models_completed", 0) + 1
    await manager.broadcast(
        model_created_payload(model_id, model_name, parameters, phase_name=phase_name)
    )


def model_updated_payload(
    model_id: str, changes: dict[str, Any], *, timestamp: str | None = None
) -> dict[str, Any]:
    """The model update payload: keyed by ``"event"``, not ``"type"``."""
    return {
        "event": "model_updated",
        "model_id": model_id,
        "changes": changes,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def model_updated(manager: Broadcaster, model_id: str, changes: dict[str, Any]) -> None:
    """Broadcast a model update (``"event": "model_updated"``)."""
    await manager.broadcast(model_updated_payload(model_id, changes))


def status_payload(
    status: str, message: str, *, active_phases: list[str], timestamp: str | None = None
) -> dict[str, Any]:
    """The backend's ``status`` payload (system health, active phases)."""
    return {
        "type": "status",
        "status": status,
        "message": message,
        "active_phases": active_phases,
        "timestamp": timestamp if timestamp is not None else _now(),
    }


async def system_status(manager: Broadcaster, status: str, message: str) -> None:
    """Broadcast ``status`` with the phases :data:`phase_status` has running."""
    running = [name for name, entry in phase_status.items() if entry.get("status") == "running"]
    await manager.broadcast(status_payload(status, message, active_phases=running))
