"""Hypothesis strategies for legacy payloads: every catalogued shape, with random values.

``legacy_payloads()`` draws payloads of every shape in :data:`legacy.catalogue.CATALOGUE`
(``legacy_payloads("model_created")`` just one), built by the producers' own
builders; with ``varied=True`` (the default) some drop optional fields, including
the timestamp, and gain unknown ``x_*`` fields, as hand-edited producers do.
``legacy_samples()`` draws ``(shape name, payload)`` pairs. ``unknown_payloads()``
draws dicts no rule knows; ``vocabulary_payloads()`` draws dicts made of the
catalogue's own field names and discriminator values in random combinations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from legacy import producers
from legacy.catalogue import CATALOGUE, SHAPE_NAMES

__all__ = [
    "json_values",
    "legacy_payloads",
    "legacy_samples",
    "unknown_payloads",
    "vocabulary_payloads",
]

#: JSON scalars that survive a trip through orjson unchanged.
json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)

#: Any JSON value: scalars, lists and string-keyed dicts, a few levels deep.
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)

_names = st.text(min_size=1, max_size=16)
_ids = st.uuids().map(str) | st.text(min_size=1, max_size=12)
_phases = st.sampled_from(["Cognate", "EvoMerge", "Quiet-STaR", "BitNet", "Forge"]) | _names
_fractions = st.floats(min_value=0.0, max_value=1.0)
_stamps = st.datetimes().map(datetime.isoformat)
_small_dicts = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=4)

#: Shape name -> payloads as its producer builds them.
SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "training_update": st.builds(
        producers.training_update_payload,
        _phases,
        _fractions,
        st.text(max_size=40),
        st.sampled_from(["running", "completed", "failed"]),
        timestamp=_stamps,
    ),
    "training_started": st.builds(
        producers.training_started_payload,
        _ids,
        _small_dicts,
        phase_name=_phases,
        message=st.text(max_size=40),
        timestamp=_stamps,
    ),
    "training_complete": st.builds(
        producers.training_complete_payload,
        _ids,
        message=st.text(max_size=40),
        final_metrics=st.none() | _small_dicts,
        timestamp=_stamps,
    ),
    "training_error": st.builds(
        producers.training_error_payload,
        st.text(max_size=40),
        phase_name=_phases,
        session_id=st.none() | _ids,
        timestamp=_stamps,
    ),
    "phase_change": st.builds(producers.phase_change_payload, _phases, _phases, timestamp=_stamps),
    "phase_complete": st.builds(
        producers.phase_complete_payload,
        _phases,
        models_completed=st.integers(0, 10),
        total_models=st.integers(0, 10),
        duration_seconds=st.floats(0, 1e6),
        timestamp=_stamps,
    ),
    "model_created": st.builds(
        producers.model_created_payload,
        _ids,
        _names,
        st.integers(0, 10**12),
        phase_name=_phases,
        timestamp=_stamps,
    ),
    "model_updated": st.builds(
        producers.model_updated_payload, _ids, _small_dicts, timestamp=_stamps
    ),
    "status": st.builds(
        producers.status_payload,
        st.sampled_from(["ready", "busy", "degraded"]) | _names,
        st.text(max_size=40),
        active_phases=st.lists(_phases, max_size=3),
        timestamp=_stamps,
    ),
    "nested_update": st.builds(
        producers.nested_update_payload, _phases, _fractions, st.text(max_size=30)
    ),
    "bare_progress": st.builds(producers.bare_progress_payload, _fractions, _ids),
}

#: Fields a variation never drops: what makes the payload recognisably its shape.
_KEEP: dict[str, frozenset[str]] = {name: frozenset({"type"}) for name in SHAPES}
_KEEP["model_updated"] = frozenset({"event"})
_KEEP["bare_progress"] = frozenset({"progress"})

assert set(SHAPES) == set(SHAPE_NAMES), "every catalogued shape needs a strategy"


#: Every ``type``/``event`` value a catalogued shape uses.
_DISCRIMINATOR_VALUES: frozenset[str] = frozenset(
    str(e.payload[key]) for e in CATALOGUE for key in ("type", "event") if key in e.payload
)


@st.composite
def _varied(draw: st.DrawFn, name: str) -> dict[str, Any]:
    payload = draw(SHAPES[name])
    if draw(st.booleans()):
        return payload  # exactly as the producer builds it
    droppable = sorted(k for k in payload if k not in _KEEP[name])
    for key in draw(st.sets(st.sampled_from(droppable))) if droppable else ():
        del payload[key]
    unknown = st.text(max_size=8).map(lambda s: "x_" + s)
    payload.update(draw(st.dictionaries(unknown, json_values, max_size=3)))
    return payload


def legacy_samples(
    *shapes: str, varied: bool = True
) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """Draw ``(shape name, payload)`` for the given shapes (default: all of them)."""
    names = shapes or SHAPE_NAMES
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shapes {unknown!r}; known: {SHAPE_NAMES!r}")
    return st.one_of(
        [st.tuples(st.just(name), _varied(name) if varied else SHAPES[name]) for name in names]
    )


def legacy_payloads(*shapes: str, varied: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """Draw payloads of the given shapes (default: every catalogued shape)."""
    return legacy_samples(*shapes, varied=varied).map(lambda sample: sample[1])


def unknown_payloads() -> st.SearchStrategy[dict[str, Any]]:
    """Draw JSON dicts no default rule matches (no ``type``, ``event`` or ``progress``)."""
    keys = st.text(max_size=10).filter(lambda k: k not in {"type", "event", "progress"})
    known_free = st.dictionaries(keys, json_values, max_size=5)
    foreign_type = st.text(max_size=10).filter(lambda v: v not in _DISCRIMINATOR_VALUES)
    return known_free | st.builds(lambda d, t: {**d, "type": t}, known_free, foreign_type)


_VOCABULARY = (
    "type", "event", "progress", "session", "session_id", "task_id", "phase_name",
    "message", "status", "timestamp", "payload", "phase", "step", "model_id", "model_name",
    "model_info", "parameters", "config", "extra", "omitted", "legacy", "legacy_shape",
    "from_phase", "to_phase", "final_metrics", "metrics", "changes", "error",
)  # fmt: skip


def vocabulary_payloads() -> st.SearchStrategy[dict[str, Any]]:
    """Draw dicts of the catalogue's own field names with random or discriminator values."""
    keys = st.sampled_from(_VOCABULARY) | st.text(max_size=6)
    values = (
        json_values
        | st.sampled_from(sorted(_DISCRIMINATOR_VALUES))
        | _small_dicts.map(lambda d: {**d, "phase": "x", "name": "y"})
    )
    return st.dictionaries(keys, values, max_size=7)
