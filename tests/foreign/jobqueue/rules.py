"""The job-queue team's translation rules for the migration (their code, not the toolkit's).

Their payloads say ``"event"``, nest the job under ``job`` and the time under
``timing.updated_at``; on the new side they become ``job_progress``/``job_done``
on topic ``jobs``.
"""

from __future__ import annotations

from typing import Any

from shim import FieldMap, TranslationRule

__all__ = ["DONE", "PROGRESS", "job_rules", "lossy_rules"]

PROGRESS: dict[str, Any] = {
    "event": "progress",
    "job": {"id": "j1", "queue": "gpu"},
    "pct": 0.25,
    "timing": {"updated_at": "2026-12-04T10:00:00Z"},
}

DONE: dict[str, Any] = {
    "event": "job_done",
    "job": {"id": "j1", "queue": "gpu"},
    "result": {"ok": True, "artifacts": ["model.bin", "log.txt"]},
    "timing": {"updated_at": "2026-12-04T10:05:00Z"},
}


def _progress(*fields: str | tuple[str, str] | FieldMap, sample: bool) -> TranslationRule:
    return TranslationRule(
        "job_progress",
        "job_progress",
        "jobs",
        discriminator=("event", "progress"),
        fields=(("job.id", "job_id"), ("job.queue", "queue"), *fields),
        timestamp_field="timing.updated_at",
        sample=PROGRESS if sample else None,
    )


def _done() -> TranslationRule:
    return TranslationRule(
        "job_done",
        "job_done",
        "jobs",
        discriminator=("event", "job_done"),
        fields=(("job.id", "job_id"), ("job.queue", "queue"), ("result.ok", "ok")),
        timestamp_field="timing.updated_at",
        sample=DONE,
    )


def job_rules() -> list[TranslationRule]:
    return [_progress("pct", sample=True), _done()]


def lossy_rules() -> list[TranslationRule]:
    """``pct`` rounded on the way in: 0.25 reaches old clients as 0.0 at ``live``.

    Built without ``sample``: the sample check would refuse the rule at build.
    """
    lossy = FieldMap("pct", "pct", forward=round, backward=float)
    return [_progress(lossy, sample=False), _done()]
