"""legacy.catalogue and the strategies built on it: names, shapes, JSON-ready examples."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings

from legacy import producers
from legacy.catalogue import CATALOGUE, SHAPE_NAMES, entry

from .strategies import legacy_samples


def test_names_are_unique_and_listed() -> None:
    assert len(set(SHAPE_NAMES)) == len(CATALOGUE)
    assert [e.name for e in CATALOGUE] == list(SHAPE_NAMES)
    assert entry("model_updated").payload["event"] == "model_updated"


def test_examples_are_json_and_name_real_producers() -> None:
    for item in CATALOGUE:
        assert orjson.loads(orjson.dumps(item.payload)) == item.payload
        assert callable(getattr(producers, item.producer))
        assert item.fresh() == item.payload
        assert item.fresh() is not item.payload


def test_the_varying_structures_are_there() -> None:
    assert "type" not in entry("model_updated").payload
    assert set(entry("bare_progress").payload) == {"progress", "session"}
    assert isinstance(entry("nested_update").payload["payload"], dict)


def _discriminator(payload: dict[str, Any]) -> object:
    return payload.get("type", payload.get("event", "<none>"))


@settings(max_examples=60)
@given(legacy_samples())
def test_generated_payloads_keep_their_shape(sample: tuple[str, dict[str, Any]]) -> None:
    name, payload = sample
    assert _discriminator(payload) == _discriminator(entry(name).payload)
    orjson.dumps(payload)
