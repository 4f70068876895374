"""The default translation rules: one per legacy payload shape in ``legacy.catalogue``.

These cover the reference backend's payloads. A migrating app keeps its own
rules in its own module and passes them with ``CompatWebSocketManager(rules=...)``
and ``ws-migration compare --rules package.module:callable`` (MIGRATION.md, step 2);
a rule names the standardized type and topic, how to recognise the payload
(``discriminator`` or ``requires``) and which fields map where.
"""

from __future__ import annotations

from typing import Final

from service.messages import MessageType

from .translate import TranslationRule

__all__ = ["MODELS", "PROGRESS_FIELDS", "SYSTEM", "TRAINING", "default_rules"]


TRAINING: Final = "training"
MODELS: Final = "models"
SYSTEM: Final = "system"

#: The guide's ``training_progress`` keys, then the legacy-only ones under their own names.
PROGRESS_FIELDS: Final = (
    "session_id",
    "progress",
    "current_epoch",
    "loss",
    "metrics",
    "estimated_time_remaining",
    "phase_name",
    "message",
    "status",
)


def default_rules() -> tuple[TranslationRule, ...]:
    """Return one rule per shape of :data:`legacy.catalogue.CATALOGUE`.

    ``training_progress`` comes from ``training_update`` (its default legacy
    shape) or the typeless ``bare_progress`` (``data["legacy_shape"]``);
    ``phase_update``'s three shapes are told apart by ``data["status"]``:
    ``"started"`` is a ``phase_change``, ``"completed"`` a ``phase_complete``,
    anything else the nested ``update``. ``model_created`` nests the model's
    name, parameter count and phase under ``model_info``, as the guide does.
    """
    t = MessageType
    return (
        TranslationRule(
            "training_update",
            t.TRAINING_PROGRESS,
            TRAINING,
            discriminator=("type", "training_update"),
            fields=PROGRESS_FIELDS,
        ),
        TranslationRule(
            "bare_progress",
            t.TRAINING_PROGRESS,
            TRAINING,
            requires=("progress",),
            fields=("progress", ("session", "session_id")),
            data_constants={"legacy_shape": "bare_progress"},
            timestamp_field=None,
        ),
        TranslationRule(
            "training_started",
            t.TRAINING_STARTED,
            TRAINING,
            discriminator=("type", "training_started"),
            fields=(("task_id", "session_id"), ("config", "parameters"), "phase_name", "message"),
        ),
        TranslationRule(
            "training_complete",
            t.TRAINING_COMPLETED,
            TRAINING,
            discriminator=("type", "training_complete"),
            constants={"status": "completed"},
            fields=("session_id", "message", ("final_metrics", "metrics")),
        ),
        TranslationRule(
            "training_error",
            t.TRAINING_FAILED,
            TRAINING,
            discriminator=("type", "training_error"),
            constants={"status": "failed"},
            fields=("session_id", "phase_name", "error"),
        ),
        TranslationRule(
            "phase_change",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "phase_change"),
            data_constants={"status": "started"},
            fields=(("to_phase", "phase_name"), ("from_phase", "previous_phase")),
        ),
        TranslationRule(
            "phase_complete",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "phase_complete"),
            data_constants={"status": "completed"},
            fields=("phase_name", "models_completed", "total_models", "duration_seconds"),
        ),
        TranslationRule(
            "nested_update",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "update"),
            timestamp_field=None,
            fields=(
                ("payload.phase", "phase_name"),
                ("payload.progress", "progress"),
                ("payload.step", "message"),
            ),
        ),
        TranslationRule(
            "model_created",
            t.MODEL_CREATED,
            MODELS,
            discriminator=("type", "model_created"),
            fields=(
                "model_id",
                ("model_name", "model_info.name"),
                ("parameters", "model_info.parameter_count"),
                ("phase_name", "model_info.phase_name"),
            ),
        ),
        TranslationRule(
            "model_updated",
            t.MODEL_UPDATED,
            MODELS,
            discriminator=("event", "model_updated"),
            fields=("model_id", "changes"),
        ),
        TranslationRule(
            "status",
            t.SYSTEM_STATUS,
            SYSTEM,
            discriminator=("type", "status"),
            fields=("status", "message", "active_phases"),
        ),
    )
