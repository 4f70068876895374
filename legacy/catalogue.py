"""One named, realistic example of every payload shape the legacy producers send.

:data:`CATALOGUE` is what the translation layer is checked against: every entry
must translate to a standardized message and back to exactly itself. The shapes
are documented in :mod:`legacy.producers`; each entry's ``name`` is the shape
name and ``producer`` the async function that broadcasts it. Payloads are built
by the producers' own builders with fixed values, so they cannot drift from what
the producers send. Treat them as read-only (use :meth:`CatalogueEntry.fresh` for
a copy to mutate).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from . import producers

__all__ = ["CATALOGUE", "SHAPE_NAMES", "CatalogueEntry", "entry"]

_TS = "2024-05-14T10:32:07.481220"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """A named legacy payload shape with one example."""

    name: str  #: the shape name (also the shim's translation rule name)
    producer: str  #: the async producer in :mod:`legacy.producers` that sends it
    payload: dict[str, Any]  #: an example, read-only by convention
    description: str

    def fresh(self) -> dict[str, Any]:
        """Return a deep copy of :attr:`payload`."""
        return copy.deepcopy(self.payload)


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "training_update",
        "update_training_progress",
        producers.training_update_payload(
            "Cognate", 0.35, "Training model 2/3: epoch 4", "running", timestamp=_TS
        ),
        "Progress of the current phase; progress is a fraction in [0, 1].",
    ),
    CatalogueEntry(
        "training_started",
        "training_started",
        producers.training_started_payload(
            "task-7f3c2a",
            {"epochs_per_phase": 6, "learning_rate": 0.0003, "base_models": ["qwen-1.5b"]},
            timestamp=_TS,
        ),
        "A training run started; the session id is called task_id, its parameters config.",
    ),
    CatalogueEntry(
        "training_complete",
        "training_completed",
        producers.training_complete_payload(
            "task-7f3c2a", final_metrics={"loss": 0.4182, "accuracy": 0.913}, timestamp=_TS
        ),
        "A training run finished; status is always 'completed'.",
    ),
    CatalogueEntry(
        "training_error",
        "training_failed",
        producers.training_error_payload(
            "CUDA out of memory", phase_name="EvoMerge", session_id="task-7f3c2a", timestamp=_TS
        ),
        "A training run failed; status is always 'failed', session_id is optional.",
    ),
    CatalogueEntry(
        "phase_change",
        "phase_changed",
        producers.phase_change_payload("Cognate", "EvoMerge", timestamp=_TS),
        "The pipeline moved on to the next phase.",
    ),
    CatalogueEntry(
        "phase_complete",
        "phase_completed",
        producers.phase_complete_payload(
            "Cognate", models_completed=3, total_models=3, duration_seconds=412.5, timestamp=_TS
        ),
        "A phase finished with its model count and duration.",
    ),
    CatalogueEntry(
        "model_created",
        "model_created",
        producers.model_created_payload(
            "cognate-model-1", "Cognate Foundation 1", 25_083_528, timestamp=_TS
        ),
        "A model was created; parameters is its parameter count.",
    ),
    CatalogueEntry(
        "model_updated",
        "model_updated",
        producers.model_updated_payload(
            "cognate-model-1", {"status": "evaluated", "score": 0.87}, timestamp=_TS
        ),
        "A model changed; keyed by 'event' instead of 'type'.",
    ),
    CatalogueEntry(
        "status",
        "system_status",
        producers.status_payload(
            "ready", "Agent Forge backend ready", active_phases=["Cognate"], timestamp=_TS
        ),
        "Backend health and the phases running.",
    ),
    CatalogueEntry(
        "nested_update",
        "progress_update",
        producers.nested_update_payload("EvoMerge", 0.42, "merging generation 21/50"),
        "Generic 'update' with its fields nested under 'payload' and no timestamp.",
    ),
    CatalogueEntry(
        "bare_progress",
        "progress_tick",
        producers.bare_progress_payload(0.3, "task-7f3c2a"),
        "A progress tick with no type at all: {'progress', 'session'}.",
    ),
)

#: The shape names, in catalogue order.
SHAPE_NAMES: tuple[str, ...] = tuple(e.name for e in CATALOGUE)

_BY_NAME = {e.name: e for e in CATALOGUE}


def entry(name: str) -> CatalogueEntry:
    """Return the catalogue entry called ``name``; raises KeyError for unknown names."""
    return _BY_NAME[name]
