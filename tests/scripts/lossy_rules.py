"""An app's own translation rules, as another team would write them, for ``--rules``.

``lossy_rules`` maps ``job_progress`` with ``forward=round``: ``pct`` loses its
fraction on the way to the new shape, so the round trip must name the rule and
``metrics.pct``. ``not_rules`` and ``broken`` exercise the refusals.
"""

from __future__ import annotations

from service.messages import MessageType
from shim.rules import default_rules
from shim.translate import FieldMap, TranslationRule, Translator


def lossy_rules() -> list[TranslationRule]:
    return [
        *default_rules(),
        TranslationRule(
            "job_progress",
            MessageType.TRAINING_PROGRESS,
            "jobs",
            discriminator=("type", "job_progress"),
            fields=("job_id", FieldMap("metrics.pct", "pct", forward=round)),
            data_constants={"legacy_shape": "job_progress"},
        ),
    ]


def translator() -> Translator:
    return Translator()


def not_rules() -> list[str]:
    return ["training_update"]


def broken() -> list[TranslationRule]:
    raise RuntimeError("no rules today")
